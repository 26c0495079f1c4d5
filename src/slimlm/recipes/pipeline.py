"""The compress pipeline: run recipes through a content-keyed stage cache, then measure every variant.

Run directory (`slimlm.runs`): ``run.json`` (model, data, options), ``variants.jsonl`` (one line per
variant: stages, metrics), ``cache/<key>/`` (saved variants), ``report.html`` and ``decision.md``.

A stage's key hashes its input's key with the stage's full config and calibration settings and the data
spec, so a second recipe sharing a prefix (or a rerun) loads the cached output instead of recomputing it.
Every file is written atomically, so a run killed at any point resumes by running the same command: finished
stages and finished evaluations are reused, only the unfinished ones run again.

Trade-off: variants are profiled together at the end, interleaved in one process (comparable ratios),
rather than right after each stage; a killed run re-profiles on resume because timings are only comparable
within one session.

Runtime: ``RunOptions.runtime`` (``torch`` by default; ``onnxruntime``, ``openvino``, ``llamacpp``) is where
the latencies are measured. On a deployment runtime every variant is exported into ``exports/<id>-<runtime>/``
(kept: the operating point's export is ready to ship, and a resumed run or the next search trial reuses the
baseline's) as the runtime's equivalent type, checked (perplexity on a fixed sample within the type's
tolerance), then timed interleaved with the baseline's export (`slimlm.export.runtimes`). A variant the
runtime cannot take, or whose export fails its check, is recorded with ``runtime_not_measured`` (the
reason) and no latency, and selection never picks it: it does not silently fall back to torch. The runtime is
part of the run's identity: resuming with another ``--runtime`` is refused, because a run's (and a study's)
latencies must all come from one runtime.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from slimlm._io import file_lock
from slimlm.data import data_list, load_data
from slimlm.errors import ConfigError, SlimlmError
from slimlm.methods import StageContext
from slimlm.models import META_FILE, Model, load
from slimlm.profile import disk_mb
from slimlm.recipes.recipe import Recipe
from slimlm.recipes.stages import run_stage
from slimlm.runs import RunDir, RunDirError, Variant


@dataclass
class RunOptions:
    """What every variant is measured on. Changing these makes a new run, not a resumed one."""

    data: str = "shakespeare"
    ood_data: str | None = "pydoc,rotten-tomatoes"  # ','-separated; each measured on its own
    eval_tokens: int = 8192
    seq_len: int = 512
    shapes: tuple = ((1, 128), (8, 128))
    decode_tokens: int = 64
    repeats: int = 5
    threads: int | None = None
    profile: bool = True
    runtime: str = "torch"  # where latencies are measured: torch, onnxruntime, openvino, llamacpp
    teacher_agreement: bool = True
    trust_remote_code: bool = False  # how to load, not what is measured: not part of the run's identity

    def __post_init__(self):
        if self.ood_data is not None:  # one spelling per list, so "a, b" resumes the run of "a,b"
            self.ood_data = ",".join(data_list(self.ood_data)) or None

    def measure_key(self) -> dict:
        d = asdict(self)
        d.pop("trust_remote_code")
        d["shapes"] = [list(s) for s in self.shapes]
        return d


def _stage_key(parent_key: str, stage_key: str, data: str) -> str:
    return hashlib.sha256(f"{parent_key}|{stage_key}|{data}".encode()).hexdigest()[:16]


class Pipeline:
    """Runs recipes for one model and data spec inside one run directory.

    Args:
        model: model spec of the baseline (the teacher).
        out: run directory (created; reused when it belongs to the same model and options).
        options: `RunOptions`.
        progress: ``progress(desc, done, total)`` for long steps.
        log: ``log(message)`` for one-line status messages (stage started, cached, finished).
    """

    def __init__(self, model: str, out: str | Path, options: RunOptions | None = None,
                 progress: Callable | None = None, log: Callable[[str], None] | None = None):
        self.spec = model
        self.out = Path(out)
        self.run = RunDir(self.out)
        self.opts = options or RunOptions()
        self.progress = progress
        self.log = log or (lambda msg: None)
        from slimlm.export.runtimes import check_runtime

        check_runtime(self.opts.runtime)  # an unknown runtime or a missing package fails before any work
        self.corpus = load_data(self.opts.data)  # fail on bad data before loading weights
        self.oods = {spec: load_data(spec) for spec in data_list(self.opts.ood_data)}
        self._check_run_dir()
        self.base = load(model, progress=self.log, trust_remote_code=self.opts.trust_remote_code)
        if self.opts.runtime == "llamacpp" and self.opts.profile and self.base.task != "causal-lm":
            raise ConfigError("--runtime llamacpp profiles causal language models only; this model is an encoder: "
                              "use --runtime onnxruntime, openvino or torch.")
        self._check_tokenizer()
        self._check_eval_text()
        self.variants: dict[str, Variant] = {}
        self._unrecorded: dict[str, Variant] = {}  # stage outputs seen this session, recorded or not
        self.stage_seconds_run = 0.0  # stage time actually spent in this session (not served from cache)
        self._load_previous()
        base_id = f"base-{self.base.hash[:8]}"
        if base_id not in self.variants:
            self.variants[base_id] = Variant(id=base_id, label=f"baseline ({model})", parent=None, stages=[],
                                             path=str(self.base.path) if self.base.path else model, is_baseline=True)
        self.base_id = base_id

    # -- run directory ---------------------------------------------------------------------------------
    def _check_run_dir(self) -> None:
        try:
            prev = self._prev_info = self.run.info()
        except RunDirError as exc:
            raise ConfigError(str(exc)) from None
        before = {"runtime": "torch", **(prev.get("options") or {})}  # runs from before --runtime: torch
        if prev and prev.get("model") == self.spec and before.get("runtime") != self.opts.runtime:
            raise ConfigError(
                f"{self.out} holds a run profiled on --runtime {before.get('runtime')}; resume it with --runtime "
                f"{before.get('runtime')} (one run's latencies come from one runtime), or use another --out or "
                "--force for a run on another runtime."
            )
        now = self.opts.measure_key()
        if prev and prev.get("model") == self.spec and before.get("ood_data") != now["ood_data"]:
            # the out-of-domain list may change on a resume: evaluate_all measures what is missing
            before = {**before, "ood_data": now["ood_data"]}
            self.log(f"out-of-domain data is now {now['ood_data'] or 'none'} (was {prev.get('ood_data') or 'none'}); "
                     "every variant is checked on what it lacks")
        if prev and (prev.get("model") != self.spec or before != now):
            raise ConfigError(
                f"{self.out} holds a run of {prev.get('model')} with other options; use another --out "
                "or the same model and options to resume it, or --force to start over."
            )
        self.run.cache.mkdir(parents=True, exist_ok=True)

    def _check_tokenizer(self) -> None:
        """A run measured with another tokenizer on the same weights (same baseline id) is not resumed: its
        cached stages and figures come from other tokens."""
        from slimlm.models.hashing import tokenizer_fingerprint

        self.base_tokenizer = tokenizer_fingerprint(self.base.tokenizer)
        prev = self._prev_info
        before = prev.get("baseline_tokenizer")
        if prev.get("model") == self.spec and before and self.base_tokenizer and before != self.base_tokenizer:
            raise ConfigError(
                f"{self.out} was measured with another tokenizer for {self.spec} (its weights are the same, its "
                "tokenizer is not: edited, or read differently by this slimlm version); its cached stages and "
                "figures come from other tokens: use another --out, or --force to start over."
            )

    def _check_eval_text(self) -> None:
        """Too little eval text fails here, before any stage runs (not after the first one)."""
        if self.base.task != "causal-lm":
            return
        from slimlm.evaluate.core import perplexity_windows

        for corpus in (self.corpus, *self.oods.values()):
            perplexity_windows(self.base, corpus, "eval", self.opts.seq_len, self.opts.eval_tokens)

    def _load_previous(self) -> None:
        try:
            previous = self.run.variants()
        except RunDirError as exc:
            raise ConfigError(str(exc)) from None
        for v in previous:
            self.variants[v.id] = v

    def write_state(self, recipes: list[str], extra: dict | None = None) -> None:
        """Write run.json and variants.jsonl, merging with what other workers wrote (`RunDir` locks)."""
        from slimlm.profile import machine_info
        from slimlm.profile.core import DEFAULT_THREADS

        prev = self.run.info()
        from slimlm.data.corpus import absolute_spec

        info = {"model": self.spec, "data": self.opts.data, "data_path": absolute_spec(self.opts.data),
                "ood_data": self.opts.ood_data,
                "options": self.opts.measure_key(),
                "recipes": sorted(set(prev.get("recipes", [])) | set(recipes)), "machine": machine_info(),
                "primary_shape": "x".join(map(str, self.opts.shapes[0])), "baseline": self.base_id,
                "baseline_tokenizer": self.base_tokenizer,
                "runtime": {"name": self.opts.runtime, "threads": self.opts.threads or DEFAULT_THREADS},
                **(extra or {})}
        self.run.update_info(info, keep=("selection", "objectives", "search", "created"))
        for v in self.run.write_variants(self.variants.values()):
            self.variants.setdefault(v.id, v)

    # -- stages ----------------------------------------------------------------------------------------
    def run_recipe(self, recipe: Recipe, record_intermediate: bool = True,
                   on_metrics: Callable[[dict], None] | None = None) -> list[str]:
        """Run (or reuse) every stage of ``recipe``; return the variant ids it produced, in order.

        With ``record_intermediate=False`` (search) only the last stage's output becomes a variant of the
        run; earlier outputs are still cached for reuse. ``on_metrics`` receives a training stage's metrics
        (`slimlm.distill.distill_run`); if it raises, the stage stops and nothing of it is cached.
        """
        parent_key, parent_dir = self.base.hash, None
        parent_id = self.base_id
        ids = []
        lineage: list[dict] = []
        for i, stage in enumerate(recipe.stages):
            key = _stage_key(parent_key, stage.key(), self.opts.data)
            vdir = self.out / "cache" / key
            lineage = lineage + [{"kind": stage.kind, "config": stage.config_dict(), "label": stage.label()}]
            label = " → ".join(s["label"] for s in lineage)
            # one worker computes a stage while another that needs the same stage waits, then reuses it
            with file_lock(self.out / "cache" / ".locks" / key):
                if (vdir / META_FILE).exists():
                    self.log(f"[{recipe.name}] stage {i + 1}/{len(recipe.stages)} {stage.label()}: cached ({key})")
                    v = self.variants.get(key) or Variant(id=key, label=label, parent=parent_id, stages=lineage,
                                                          path=f"cache/{key}")
                    v.cached = True
                    self._fill_stage_info(v, vdir)
                else:
                    self.log(f"[{recipe.name}] stage {i + 1}/{len(recipe.stages)} {stage.label()}: running")
                    model = (load(parent_dir, trust_remote_code=self.opts.trust_remote_code) if parent_dir
                             else self._fresh_base())
                    ctx = StageContext(corpus=self.corpus, teacher=self.base, progress=self.progress,
                                       checkpoint_dir=self.out / "cache" / f".{key}.ckpt", on_metrics=on_metrics)
                    t = time.perf_counter()
                    result = run_stage(model, stage, ctx)
                    seconds = time.perf_counter() - t
                    self.stage_seconds_run += seconds
                    stage.config.save_output(model, vdir, result, metrics={"stage_seconds": seconds})
                    report = result.report
                    shutil.rmtree(ctx.checkpoint_dir, ignore_errors=True)
                    v = Variant(id=key, label=label, parent=parent_id, stages=lineage, path=f"cache/{key}")
                    self._fill_stage_info(v, vdir)
                    self.log(f"[{recipe.name}] stage {i + 1} done in {seconds:.0f} s: "
                             f"{report.get('params_before', 0):,} → {report.get('params_after', model.num_params()):,} params")
                    del model
            parent = self.variants.get(parent_id) or self._unrecorded.get(parent_id)
            v.seconds = (parent.seconds if parent else 0.0) + v.seconds
            v.recovery = {"tokens": (parent.recovery["tokens"] if parent else 0) + v.recovery["tokens"],
                          "seconds": (parent.recovery["seconds"] if parent else 0.0) + v.recovery["seconds"]}
            if key in self.variants:  # keep measured metrics from an earlier run
                v.metrics = self.variants[key].metrics if self.variants[key].metrics.measured else v.metrics
            if record_intermediate or i == len(recipe.stages) - 1 or key in self.variants:
                self.variants[key] = v
            self._unrecorded[key] = v
            ids.append(key)
            parent_key, parent_dir, parent_id = key, vdir, key
        return ids

    def _fresh_base(self) -> Model:
        m = copy.deepcopy(self.base)
        m.provenance = copy.deepcopy(self.base.provenance)
        return m

    @staticmethod
    def _fill_stage_info(v: Variant, vdir: Path) -> None:
        meta = json.loads((vdir / META_FILE).read_text())
        v.seconds = float(meta.get("metrics", {}).get("stage_seconds", 0.0))
        d = meta.get("distill")
        if d:
            v.recovery = {"tokens": int(d.get("tokens", 0)), "seconds": float(d.get("seconds", 0.0))}
            curve = d.get("eval_curve") or []
            if curve:
                v.curves = {"distill": {"step": [c.get("step") for c in curve],
                                        "eval_perplexity": [c.get("perplexity") for c in curve]}}
        else:
            v.recovery = {"tokens": 0, "seconds": 0.0}

    # -- measurement -----------------------------------------------------------------------------------
    def _model_of(self, v: Variant) -> Model:
        return self.base if v.is_baseline else load(self.out / v.path, trust_remote_code=self.opts.trust_remote_code)

    def _missing_ood(self, v: Variant) -> list[str]:
        """The ``--ood-data`` corpora variant ``v`` has no result on (decoders only)."""
        if self.base.task != "causal-lm":
            return []
        return [spec for spec in self.oods if spec not in v.metrics.ood]

    def _sync_ood(self) -> None:
        """Keep each variant's out-of-domain results to the current list, in its order (a resumed run may list
        other corpora): the first corpus's figures are the ``ood_*`` scalars. Without a list (``none``) nothing
        new is measured and the results stay as they are."""
        if not self.oods:
            return
        first = next(iter(self.oods))
        for v in self.variants.values():
            m = v.metrics
            m.ood = {spec: m.ood[spec] for spec in self.oods if spec in m.ood}
            x = m.ood.get(first)
            m.ood_perplexity = x.get("perplexity") if x else None
            m.ood_bits_per_byte = x.get("bits_per_byte") if x else None
            m.ood_bytes_per_token = x.get("bytes_per_token") if x else None
            if not m.ood:
                m.ood_quality_drop = None

    def evaluate_all(self, ids: list[str] | None = None) -> None:
        """Quality of every variant not yet measured (cached in its ``metrics``); a variant measured before
        the ``--ood-data`` list grew is evaluated on the corpora it lacks only."""
        self._sync_ood()
        self._drops()
        todo = [v for v in self.variants.values() if (ids is None or v.id in ids or v.is_baseline)
                and (not v.metrics.measured or self._missing_ood(v))]
        for n, v in enumerate(todo):
            self.log(f"evaluating {v.label} ({n + 1}/{len(todo)})")
            m = self._model_of(v)
            if not v.metrics.measured:
                v.metrics.update(self._in_domain(m, v))
            missing = self._missing_ood(v)  # every listed corpus for a new variant; else those added since
            if missing:
                v.metrics.update({"ood": {**v.metrics.ood, **self._ood_results(m, missing)}})
            self._sync_ood()
            self._drops()
            self.write_state([])

    def _in_domain(self, m: Model, v: Variant) -> dict:
        """Quality on the eval split of ``--data`` (with agreement with the teacher), parameters and disk."""
        from slimlm.evaluate import evaluate

        teacher = self.base if (self.opts.teacher_agreement and not v.is_baseline) else None
        q = evaluate(m, self.corpus, seq_len=self.opts.seq_len, max_tokens=self.opts.eval_tokens,
                     teacher=teacher, progress=self.progress)
        metrics = {"perplexity": q.get("perplexity"), "ece": q.get("ece"), "accuracy": q.get("accuracy"),
                   "f1": q.get("f1"), "eval_tokens": q.get("tokens"), "bits_per_byte": q.get("bits_per_byte"),
                   "bytes_per_token": q.get("bytes_per_token")}
        if q.get("teacher_agreement"):
            metrics["teacher_top1"] = q["teacher_agreement"]["top1"]
            metrics["teacher_kl"] = q["teacher_agreement"]["kl"]
        metrics["params"] = m.num_params()
        metrics["disk_mb"] = disk_mb(m)  # static size; profile_all adds the rest
        return metrics

    def _ood_results(self, m: Model, specs: list[str]) -> dict:
        from slimlm.evaluate import evaluate

        out = {}
        for spec in specs:
            o = evaluate(m, self.oods[spec], seq_len=self.opts.seq_len, max_tokens=self.opts.eval_tokens,
                         progress=self.progress)
            out[spec] = {"perplexity": o["perplexity"], "bits_per_byte": o.get("bits_per_byte"),
                         "bytes_per_token": o.get("bytes_per_token")}
        return out

    def _drops(self) -> None:
        from slimlm.evaluate import perplexity_drop  # per baseline token, also for a trimmed vocabulary

        base = self.variants[self.base_id].metrics
        for v in self.variants.values():
            m = v.metrics
            if base.perplexity and m.perplexity:
                m.quality_drop = perplexity_drop(m.perplexity, base.perplexity, m.bits_per_byte, base.bits_per_byte,
                                                 m.bytes_per_token, base.bytes_per_token)
            elif base.accuracy and m.accuracy is not None:
                m.quality_drop = 1 - m.accuracy / base.accuracy
            if base.ood and m.ood:  # each corpus against the baseline's; the guard reads the worst
                drops = []
                for spec, b in base.ood.items():  # the current list (`_sync_ood`)
                    x = m.ood.get(spec)
                    if x is None or not b.get("perplexity") or not x.get("perplexity"):
                        drops.append(None)
                        continue
                    x["quality_drop"] = perplexity_drop(x["perplexity"], b["perplexity"], x.get("bits_per_byte"),
                                                        b.get("bits_per_byte"), x.get("bytes_per_token"),
                                                        b.get("bytes_per_token"))
                    drops.append(x["quality_drop"])
                m.ood_quality_drop = None if None in drops else max(drops)

    def profile_all(self, ids: list[str] | None = None) -> None:
        """Profile the baseline and the given variants together, interleaved (see module docstring)."""
        from slimlm.profile import compare

        chosen = [v for v in self.variants.values() if v.is_baseline or ids is None or v.id in ids]
        chosen.sort(key=lambda v: not v.is_baseline)
        if self.opts.runtime != "torch":
            self._profile_on_runtime(chosen)
            return
        self.log(f"profiling {len(chosen)} variants side by side (latency, decode, peak memory)")
        models = [self._model_of(v) for v in chosen]
        results = compare(models, shapes=self.opts.shapes, decode_tokens=self.opts.decode_tokens,
                          threads=self.opts.threads, repeats=self.opts.repeats, progress=self.progress)
        primary = "x".join(map(str, self.opts.shapes[0]))
        session = uuid.uuid4().hex[:12]  # timings are comparable only within one interleaved session
        for v, r in zip(chosen, results, strict=True):
            lat = r["latency_ms"].get(primary, {})
            latency = {shape: {**x, "session": session} for shape, x in r["latency_ms"].items()}
            v.metrics.update({
                "params": r["params"], "nonzero_params": r["nonzero_params"], "disk_mb": r["disk_mb"],
                "peak_rss_mb": r["peak_rss_mb"], "latency_ms": latency, "latency_p50_ms": lat.get("p50"),
                "latency_p99_ms": lat.get("p99"), "decode_tokens_per_s": r["decode_tokens_per_s"],
                "flops": r["flops"], "energy_j_per_1k_tokens": r["energy_j_per_1k_tokens"],
                "co2e_g_per_1k_tokens": r["co2e_g_per_1k_tokens"], "energy_source": r["energy_source"],
                "roofline": r["roofline"], "ratios": r["ratios"], "threads": r["threads"],
            })
            if v.is_baseline and v.path and not v.path.startswith(("builtin:", "tiny:")):
                v.metrics.disk_mb = r["disk_mb"]
        del models
        self.write_state([])

    def _profile_on_runtime(self, chosen: list[Variant]) -> None:
        """`profile_all` on a deployment runtime (see the module docstring)."""
        from slimlm.export.runtimes import as_brought, compare_runtime, runtime_export, runtime_type

        rt = self.opts.runtime
        self.log(f"exporting {len(chosen)} variants for {rt} (reused when already exported)")
        ok, models, exports = [], [], []
        for v in chosen:
            m = self._model_of(v)
            # a baseline brought as a .gguf runs in llama.cpp as that file: the one the user serves today
            exp = as_brought(m) if rt == "llamacpp" and v.is_baseline else None
            precision, why = (exp["precision"], None) if exp else runtime_type(m, rt)  # why: no equivalent type
            try:
                if why is None and exp is None:
                    exp = runtime_export(m, rt, self.out / "exports" / f"{v.id}-{rt}", precision=precision, check=True,
                                         progress=self.log)
            except SlimlmError as exc:  # the export failed its check (or the converter refused the model)
                r = getattr(exc, "result", None)
                why = (f"its {rt} {precision} export's perplexity on the check sample is {r['relative_change']:+.1%} "
                       f"off the variant's ({r['variant_perplexity']:.4g} -> {r['export_perplexity']:.4g}), beyond "
                       f"the {r['tolerance']:.1%} allowed for {precision}" if r and "relative_change" in r
                       else str(exc))  # an encoder's check (outputs, not perplexity) says it in its message
            except Exception as exc:  # noqa: BLE001 - one variant's failed conversion must not lose the run
                why = f"the {rt} export failed: {type(exc).__name__}: {exc}"[:500]
            if why is None:
                ok.append(v)
                models.append(m)
                exports.append(exp)
                continue
            if v.is_baseline:
                raise ConfigError(f"the baseline cannot be profiled on {rt}: {why}")
            self.log(f"{v.label or v.id}: not measured on {rt}: {why}")
            v.metrics.update({"latency_ms": {}, "latency_p50_ms": None, "latency_p99_ms": None, "peak_rss_mb": None,
                              "energy_j_per_1k_tokens": None, "co2e_g_per_1k_tokens": None,
                              "decode_tokens_per_s": None, "ratios": {}, "runtime": rt,
                              "runtime_not_measured": why})
        self.log(f"profiling {len(ok)} variants side by side on {rt} (latency"
                 + (", decode" if all(m.task == "causal-lm" for m in models) else "; encoders: no decode")
                 + ", peak memory in a fresh process each)")
        results = compare_runtime(models, rt, shapes=self.opts.shapes, decode_tokens=self.opts.decode_tokens,
                                  threads=self.opts.threads, repeats=self.opts.repeats, exports=exports,
                                  memory=True, progress=self.progress)
        primary = "x".join(map(str, self.opts.shapes[0]))
        session = uuid.uuid4().hex[:12]
        for v, r, exp in zip(ok, results, exports, strict=True):
            lat = r["latency_ms"].get(primary, {})
            check = r.get("check") or {}
            v.metrics.update({
                "latency_ms": {shape: {**x, "session": session} for shape, x in r["latency_ms"].items()},
                "latency_p50_ms": lat.get("p50"), "latency_p99_ms": lat.get("p99"),
                "decode_tokens_per_s": r["decode_tokens_per_s"], "ratios": r["ratios"], "threads": r["threads"],
                "peak_rss_mb": r["peak_rss_mb"], "energy_j_per_1k_tokens": r["energy_j_per_1k_tokens"],
                "co2e_g_per_1k_tokens": r["co2e_g_per_1k_tokens"], "energy_source": r["energy_source"],
                "runtime": rt, "runtime_format": r["format"],
                "runtime_precision": r["precision"],
                "runtime_inference_precision": r.get("inference_precision"),
                "runtime_disk_mb": r["disk_mb"], "runtime_not_measured": None,
                "runtime_export": exp["main_file"] if exp.get("as_brought") else str(Path(exp["out"]).relative_to(self.out)),
                "runtime_as_brought": bool(exp.get("as_brought")),
                "runtime_check": {k: check[k] for k in ("metric", "variant_perplexity", "export_perplexity",
                                                         "relative_change", "min_cosine", "argmax_agreement",
                                                         "relative_logit_diff", "tolerance", "reader") if k in check}
                if check else None,
            })
        del models
        self.write_state([])


def compress(model: str, recipes: list[Recipe], out: str | Path, options: RunOptions | None = None, *,
             progress: Callable | None = None, log: Callable[[str], None] | None = None) -> Pipeline:
    """Run ``recipes`` on ``model`` in run directory ``out``; evaluate and profile every variant.

    Returns the `Pipeline`, whose ``variants`` hold every measured variant (the baseline first). Selection
    and the report are separate steps (`slimlm.search.select`, `slimlm.report.write_report`).

    Example:
        >>> p = compress("tiny:llama", [load_recipe("int8-only")], "runs/demo")  # doctest: +SKIP
    """
    p = Pipeline(model, out, options, progress=progress, log=log)
    names = [r.name for r in recipes]
    p.write_state(names)
    ids: list[str] = []
    for r in recipes:
        ids += p.run_recipe(r)
        p.write_state(names)
    p.evaluate_all()
    if p.opts.profile:
        p.profile_all()
    p.write_state(names)
    return p
