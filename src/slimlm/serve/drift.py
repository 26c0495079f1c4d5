"""Drift, measured two ways, both off the request path on background threads.

**Canary**: every ``canary_interval_s`` the served model is evaluated (`slimlm.evaluate`) on a fixed golden
sample (the run's eval split, or a file the user gives) and the relative drop against the teacher is
published. The teacher's value on the same sample and budget is measured once (a change of budget changes
perplexity, so the offline figure in ``variants.jsonl`` is used only when no teacher can be loaded). The
canary also times a prefill at the run's primary shape, which puts the live point on the same axes as the
decision's frontier. This catches a bad build or a wrong file swapped in: the golden sample does not move.

**Shadow scoring**: a sampled share of live requests (prompt plus generated tokens) is run through the
student and the teacher in a bounded background queue; top-1 agreement and KL(teacher‖student) over a recent
window are published. Golden samples cannot see a change of *traffic*; this can: agreement falling on real
requests while the canary holds means users now send text the model was not compressed for.

Trade-off: both compete with requests for the same cores. The canary budget is small by default and the
shadow queue drops work rather than grow; both are off when their interval or ratio is 0.
"""

from __future__ import annotations

import queue
import random
import statistics
import threading
import time
from collections import deque

import torch

from slimlm.evaluate import kl_teacher_student


def _shape(target) -> tuple[int, int]:
    text = ((target.decision or {}).get("primary_shape") or "1x128").lower()
    try:
        b, s = (int(x) for x in text.split("x"))
        return b, s
    except ValueError:
        return 1, 128


def run_data(decision: dict) -> str:
    """The run's data spec as a server started anywhere reads it: the absolute form `compress` recorded beside
    the one given (which is relative to where it ran), else the one given (runs from before that record)."""
    return str(decision.get("data_path") or decision["data"])


class Canary:
    """Periodic golden-sample evaluation of the served model.

    Args:
        state: the app state (``current`` served model, ``teacher()``).
        metrics: `ServerMetrics`.
        settings: `ServeSettings`.
    """

    def __init__(self, state, metrics, settings):
        self.state, self.metrics, self.settings = state, metrics, settings
        self._kick, self._stop = threading.Event(), threading.Event()
        self._corpus = None
        self._reference: dict[str, float] = {}
        self.last: dict = {}
        self._thread: threading.Thread | None = None

    def enabled(self) -> bool:
        t = self.state.current.target
        return self.settings.canary_interval_s > 0 and bool(self.settings.canary_data or (t.decision or {}).get("data"))

    def check_data(self) -> str | None:
        """Read the canary's data now: `DataError`/`SpecError` for a ``--canary-data`` that cannot be read; for
        the run's own data, a note saying why not (the server still serves; ``/healthz`` shows the error)."""
        from slimlm.data import load_data
        from slimlm.errors import SlimlmError

        if not self.enabled():
            return None
        spec, _ = self._spec(self.state.current.target)
        try:
            self._corpus = (spec, load_data(spec))
        except SlimlmError as exc:
            if self.settings.canary_data:
                raise
            return (f"the canary cannot read the run's data ({exc}); it reports errors until it can: pass "
                    "--canary-data DATA")
        return None

    def start(self) -> None:
        self.metrics.canary_interval.set(self.settings.canary_interval_s if self.enabled() else 0)
        self.metrics.canary_last.set(time.time())  # "stale" counts from start-up until the first success
        if self.enabled():
            self._thread = threading.Thread(target=self._loop, name="slimlm-canary", daemon=True)
            self._thread.start()

    def kick(self) -> None:
        """Run again now (after a switch)."""
        self._kick.set()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=30)  # let a running evaluation finish before the interpreter exits

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
                self.metrics.canary_runs.labels(outcome="ok").inc()
            except Exception as exc:  # a failed canary must not kill the server; it shows as stale + counter
                self.last = {"error": f"{type(exc).__name__}: {exc}"}
                self.metrics.canary_runs.labels(outcome="error").inc()
            self._kick.wait(self.settings.canary_interval_s)
            self._kick.clear()

    def _spec(self, target) -> tuple[str, str]:
        if self.settings.canary_data:
            return self.settings.canary_data, "eval"
        return run_data(target.decision), "eval"

    def _seq_len(self, target, engine) -> int:
        run_len = ((target.decision or {}).get("options") or {}).get("seq_len") or 256
        return min(self.settings.canary_seq_len or min(run_len, 256), engine.max_positions)

    def _measure(self, engine, corpus, split: str, seq_len: int) -> float:
        from slimlm.evaluate import evaluate

        n = self.settings.canary_tokens
        res = evaluate(engine.model, corpus, split=split, seq_len=seq_len, max_tokens=n,
                       max_examples=max(8, n // 64))
        return res["perplexity"] if engine.task == "causal-lm" else res["accuracy"]

    def _ref(self, target, corpus, split, seq_len, key: str) -> tuple[float | None, str]:
        if key in self._reference:
            return self._reference[key], "teacher"
        teacher = self.state.teacher()
        if teacher is not None:
            self._reference[key] = self._measure(teacher, corpus, split, seq_len)
            return self._reference[key], "teacher"
        base = target.baseline_metrics
        v = base.get("perplexity") if base.get("perplexity") is not None else base.get("accuracy")
        return v, "recorded"

    def run_once(self) -> dict:
        """One canary evaluation of the model being served now; publishes and returns what it measured."""
        from slimlm.data import load_data

        start = time.perf_counter()
        served = self.state.current
        target, engine = served.target, served.engine
        spec, split = self._spec(target)
        if self._corpus is None or self._corpus[0] != spec:
            self._corpus = (spec, load_data(spec))
        corpus = self._corpus[1]
        seq_len = self._seq_len(target, engine)
        val = self._measure(engine, corpus, split, seq_len)
        ref, ref_from = self._ref(target, corpus, split, seq_len, f"{spec}|{seq_len}|{self.settings.canary_tokens}")
        if ref is None:
            drop = float("nan")
        elif engine.task == "causal-lm":
            drop = val / ref - 1
        else:
            drop = 1 - val / ref if ref else float("nan")
        lat = self._probe(engine, target)
        if self.state.current is not served:  # switched while measuring: this result is of the old model
            return {}
        self.metrics.canary_value.labels(model="served").set(val)
        if ref is not None:
            self.metrics.canary_value.labels(model="teacher").set(ref)
        self.metrics.canary_drop.set(drop)
        if lat is not None:
            self.metrics.canary_prefill.set(lat)
        self.metrics.canary_last.set(time.time())
        self.metrics.canary_seconds.set(time.perf_counter() - start)
        self.last = {"data": spec, "split": split, "seq_len": seq_len, "value": val, "reference": ref,
                     "reference_from": ref_from, "drop": drop, "prefill_p50_s": lat, "decision": served.number,
                     "at": time.time()}
        return self.last

    @torch.inference_mode()
    def _probe(self, engine, target) -> float | None:
        """p50 of three prefills at the primary shape, the x axis of the decision's frontier."""
        b, s = _shape(target)
        s = min(s, engine.max_positions)
        vocab = engine.model.adapter.vocab_size
        ids = torch.randint(10, max(11, vocab - 1), (b, s), generator=torch.Generator().manual_seed(0))
        times = []
        for _ in range(3):
            t = time.perf_counter()
            engine.model.hf(input_ids=ids, attention_mask=torch.ones_like(ids))
            times.append(time.perf_counter() - t)
        return statistics.median(times)


class Shadow:
    """Teacher scoring of a sampled share of live requests, in a bounded background queue."""

    def __init__(self, state, metrics, settings, window: int = 100):
        self.state, self.metrics, self.settings = state, metrics, settings
        self._q: queue.Queue = queue.Queue(maxsize=32)
        self._window: deque[tuple[float, float, int]] = deque(maxlen=window)  # (top1 hits, kl sum, tokens)
        self._rng = random.Random(0)
        self._thread: threading.Thread | None = None
        self.scored = 0

    def enabled(self) -> bool:
        return self.settings.shadow_ratio > 0 and self.state.has_teacher()

    def start(self) -> None:
        self.metrics.shadow_ratio.set(self.settings.shadow_ratio if self.enabled() else 0)
        if self.enabled():
            self._thread = threading.Thread(target=self._loop, name="slimlm-shadow", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            try:
                self._q.put(None, timeout=5)
            except queue.Full:
                return
            self._thread.join(timeout=30)

    def reset(self) -> None:
        """Forget the window (after a switch: agreement is of the model being served)."""
        self._window.clear()

    def offer(self, served, item) -> None:
        """Maybe enqueue one finished request: token ids (LM) or an encoded input (classifier)."""
        if self._thread is None or self._rng.random() >= self.settings.shadow_ratio:
            return
        try:
            self._q.put_nowait((served, item))
        except queue.Full:
            self.metrics.shadow_dropped.inc()

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            try:
                self.score(*job)
            except Exception:  # noqa: BLE001 - scoring is best effort; never take the server down
                self.metrics.shadow_dropped.inc()

    def score(self, served, item) -> tuple[float, float] | None:
        """Score one request; returns (top-1 agreement, mean KL) of that request."""
        teacher = self.state.teacher()
        if teacher is None or served is not self.state.current:
            return None
        s = served.engine.logits(item)  # (T, V) or (C,)
        vmap = served.engine.model.provenance.get("vocab_map")
        if isinstance(item, list) and vmap:
            t = teacher.logits([vmap[i] for i in item])[..., torch.as_tensor(vmap)]
        else:
            t = teacher.logits(item)
        if s.shape != t.shape:
            return None
        if s.dim() == 1:
            s, t = s[None], t[None]
        top1 = float((s.argmax(-1) == t.argmax(-1)).sum())
        kl = float(kl_teacher_student(t, s).sum())
        n = s.shape[0]
        self._window.append((top1, kl, n))
        hits, kls, toks = (sum(x[i] for x in self._window) for i in range(3))
        self.metrics.shadow_top1.set(hits / toks)
        self.metrics.shadow_kl.set(kls / toks)
        self.metrics.shadow_scored.inc()
        self.scored += 1
        return top1 / n, kl / n
