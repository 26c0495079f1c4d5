"""The typed run directory: the one way the pipeline, search, report, CLI and server read and write a run.

A run directory holds ``run.json`` (what the run measures: model, data, options, machine, search settings,
selection), ``variants.jsonl`` (one `Variant` per line, the baseline first), ``cache/<key>/`` (saved
variants), ``study.db``, ``report.html`` and ``decision.md``. Only this module parses the two metadata files.

Writes happen under `RunDir.lock` (several search workers may share one directory), merge with what other
workers wrote since, and replace the files atomically. Latency alignment happens here, once, when variants
are written: a search profiles each trial with the baseline *at that moment*, and absolute times from
different moments are not comparable on a shared machine while their interleaved ratios are; so every
variant's latencies are restated on the baseline's latest timing through its measured speedup, and the
timed value is kept beside it (``Latency.measured_p50``). The terminal table, the report and the server
therefore all show the same numbers.

Trade-off: metrics are a typed record with the fields slimlm measures plus an ``extra`` mapping, so that a
run written by a later slimlm (with new metrics) still round-trips through this one without loss.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from slimlm._io import write_json_atomic, write_text_atomic
from slimlm.errors import SlimlmError

VARIANTS_FILE = "variants.jsonl"
INFO_FILE = "run.json"
DECISIONS_DIR = "decisions"  # decisions/0001.json, 0002.json...: versioned operating points, never rewritten
_DECISION = re.compile(r"^(\d{4,})\.json$")


class RunDirError(SlimlmError):
    """A run directory that cannot be read (missing, empty or corrupt metadata)."""


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        return None
    return float(v)


def worst_corpus(per_corpus: Any) -> str | None:
    """Of per-corpus results (``Metrics.ood``: spec -> ``{"quality_drop", ...}``), the spec with the largest
    quality drop; None when none has one (or it is not such a mapping)."""
    if not isinstance(per_corpus, Mapping):
        return None
    drops = {str(c): _num(x.get("quality_drop")) for c, x in per_corpus.items() if isinstance(x, Mapping)}
    drops = {c: d for c, d in drops.items() if d is not None}
    return max(drops, key=lambda c: drops[c]) if drops else None


@dataclass
class Latency:
    """Prefill latency of one ``BxS`` shape, in milliseconds.

    ``p50``/``p90``/``p99`` are on the run's latest baseline timing (see the module docstring);
    ``measured_p50`` is the p50 as it was timed, set when alignment moved it. ``session`` names the profile
    session (one interleaved `slimlm.profile.compare` call) the timing came from.
    """

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    measured_p50: float | None = None
    session: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Latency:
        d = dict(d or {})
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: d.pop(k) for k in list(d) if k in known}, extra=d)

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        return {**self.extra, **out}


@dataclass
class Metrics:
    """Everything measured on one variant. Missing measurements are ``None``.

    Quality (eval split of ``--data``; ``ood_*`` on ``--ood-data``): ``perplexity``, ``ece``, ``accuracy``,
    ``f1``, ``eval_tokens``, ``teacher_top1``, ``teacher_kl``, ``ood_perplexity``, ``bits_per_byte`` /
    ``bytes_per_token`` (and ``ood_`` ones), and the relative drops against the baseline ``quality_drop`` /
    ``ood_quality_drop`` (between different tokenizations, e.g. a trimmed vocabulary, from bits per byte:
    `perplexity_drop`). Out of domain, ``ood`` holds each ``--ood-data`` corpus's ``perplexity``,
    ``bits_per_byte``, ``bytes_per_token`` and ``quality_drop`` by spec; the ``ood_perplexity`` / ``ood_bits_per_byte``
    / ``ood_bytes_per_token`` are the first corpus's, and ``ood_quality_drop`` is the worst drop over all of them
    (what the out-of-domain guard reads; ``ood_worst`` names that corpus). Size: ``params``, ``nonzero_params``,
    ``disk_mb``. Memory: ``peak_rss_mb``. Speed: ``latency_ms`` (shape -> `Latency`), ``latency_p50_ms`` /
    ``latency_p99_ms`` (the run's primary shape), ``decode_tokens_per_s``, ``ratios`` (interleaved ratios to
    the baseline: ``prefill_speedup_<shape>``, ``decode_speedup``, ``disk``, ``energy``...), ``flops``,
    ``roofline``, ``threads``. Energy: ``energy_j_per_1k_tokens``, ``co2e_g_per_1k_tokens``, ``energy_source``.
    """

    perplexity: float | None = None
    ece: float | None = None
    accuracy: float | None = None
    f1: float | None = None
    eval_tokens: int | None = None
    teacher_top1: float | None = None
    teacher_kl: float | None = None
    ood_perplexity: float | None = None
    bits_per_byte: float | None = None
    bytes_per_token: float | None = None
    ood_bits_per_byte: float | None = None
    ood_bytes_per_token: float | None = None
    quality_drop: float | None = None
    ood_quality_drop: float | None = None
    ood: dict[str, dict[str, Any]] = field(default_factory=dict)
    params: int | None = None
    nonzero_params: int | None = None
    disk_mb: float | None = None
    peak_rss_mb: float | None = None
    latency_ms: dict[str, Latency] = field(default_factory=dict)
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    decode_tokens_per_s: float | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    flops: dict[str, float] = field(default_factory=dict)
    roofline: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    energy_j_per_1k_tokens: float | None = None
    co2e_g_per_1k_tokens: float | None = None
    energy_source: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Metrics:
        d = dict(d or {})
        kw = {k: d.pop(k) for k in list(d) if k in _METRIC_FIELDS}
        kw["latency_ms"] = {s: Latency.from_dict(x) for s, x in (kw.get("latency_ms") or {}).items()
                            if isinstance(x, Mapping)}
        for k in ("ratios", "flops", "roofline"):
            kw[k] = dict(kw.get(k) or {})
        kw["ood"] = {str(c): dict(x) for c, x in (kw.get("ood") or {}).items() if isinstance(x, Mapping)}
        return cls(**kw, extra=d)

    def to_dict(self) -> dict:
        out: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            out[f.name] = {s: lat.to_dict() for s, lat in v.items()} if f.name == "latency_ms" else v
        return out

    def get(self, key: str) -> Any:
        """A measurement by name (a field, else an extra one); None when absent."""
        if key in _METRIC_FIELDS:
            return getattr(self, key)
        return self.extra.get(key)

    def number(self, key: str) -> float | None:
        """A measurement as a float, or None when missing, null, NaN or not a number."""
        return _num(self.get(key))

    def update(self, values: Mapping[str, Any]) -> None:
        """Set measurements by name; unknown names go to ``extra``."""
        for k, v in values.items():
            if k == "latency_ms":
                v = {s: x if isinstance(x, Latency) else Latency.from_dict(x) for s, x in (v or {}).items()}
            if k in _METRIC_FIELDS:
                setattr(self, k, v)
            else:
                self.extra[k] = v

    def speedup(self, shape: str) -> float | None:
        """Prefill speedup over the baseline at ``shape`` (interleaved ratio), None when not profiled."""
        return _num(self.ratios.get(f"prefill_speedup_{shape}"))

    @property
    def quality(self) -> float | None:
        """The headline quality: perplexity for language models, else accuracy."""
        return self.perplexity if self.perplexity is not None else self.accuracy

    @property
    def ood_worst(self) -> str | None:
        """The ``--ood-data`` corpus with the largest quality drop (None when none has one)."""
        return worst_corpus(self.ood)

    @property
    def measured(self) -> bool:
        return self.perplexity is not None or self.accuracy is not None


_METRIC_FIELDS = frozenset(f.name for f in fields(Metrics)) - {"extra"}  # looked up per metric read


@dataclass
class Variant:
    """One model in a run: the baseline or the output of a stage, with what was measured on it.

    ``stages`` is the lineage from the baseline (``{"kind", "config", "label"}`` per stage); ``path`` is the
    saved variant relative to the run directory (or the baseline's model spec); ``recovery`` is the
    distillation spent on its lineage (``tokens``, ``seconds``); ``seconds`` is the stage time of its lineage.
    ``cached`` says whether this session reused it from the stage cache (not written to disk).
    """

    id: str
    label: str = ""
    parent: str | None = None
    stages: list[dict] = field(default_factory=list)
    path: str | None = None
    is_baseline: bool = False
    metrics: Metrics = field(default_factory=Metrics)
    recovery: dict = field(default_factory=lambda: {"tokens": 0, "seconds": 0.0})
    curves: dict = field(default_factory=dict)
    seconds: float = 0.0
    cached: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Variant:
        known = {f.name for f in fields(cls)} - {"metrics", "cached"}
        kw = {k: v for k, v in d.items() if k in known}
        kw["stages"] = list(kw.get("stages") or [])
        kw["recovery"] = dict(kw.get("recovery") or {"tokens": 0, "seconds": 0.0})
        kw["curves"] = dict(kw.get("curves") or {})
        kw["seconds"] = float(kw.get("seconds") or 0.0)
        return cls(**kw, metrics=Metrics.from_dict(d.get("metrics")))

    def to_dict(self) -> dict:
        return {"id": self.id, "label": self.label, "parent": self.parent, "stages": self.stages,
                "path": self.path, "is_baseline": self.is_baseline, "metrics": self.metrics.to_dict(),
                "recovery": self.recovery, "curves": self.curves, "seconds": self.seconds}

    def value(self, key: str) -> float | None:
        """A number by name: a variant field (``seconds``) or a measurement (``quality_drop``)."""
        if key in ("seconds",):
            return _num(getattr(self, key))
        return self.metrics.number(key)


def align_latency(variants: list[Variant]) -> int:
    """Restate every variant's latencies on the baseline's latest timing: ``base p50 / measured speedup``.

    p90 and p99 move by the same factor as p50, so a variant's spread stays its own. The timed p50 is kept
    in ``measured_p50``. Idempotent. Returns how many shapes moved.
    """
    base = next((v for v in variants if v.is_baseline), None)
    if base is None:
        return 0
    moved = 0
    for v in variants:
        m = v.metrics
        if v.is_baseline:
            continue
        for shape, lat in m.latency_ms.items():
            speedup, ref = m.speedup(shape), (base.metrics.latency_ms.get(shape) or Latency()).p50
            if not (speedup and ref and lat.p50):
                continue
            aligned = ref / speedup
            if abs(aligned - lat.p50) <= 1e-9 * aligned:
                continue
            if lat.measured_p50 is None:
                lat.measured_p50 = lat.p50
            factor = aligned / lat.p50
            lat.p50 = aligned
            lat.p90 = lat.p90 * factor if lat.p90 else lat.p90
            lat.p99 = lat.p99 * factor if lat.p99 else lat.p99
            moved += 1
    for v in variants:
        first = next(iter(v.metrics.latency_ms.values()), None)
        if first is not None and first.p50:
            v.metrics.latency_p50_ms, v.metrics.latency_p99_ms = first.p50, first.p99
    return moved


def _merge(old: Variant, new: Variant) -> Variant:
    """Keep measurements another worker made that this one lacks (field by field)."""
    for f in fields(Metrics):
        if f.name == "extra":
            continue
        mine, theirs = getattr(new.metrics, f.name), getattr(old.metrics, f.name)
        if mine in (None, {}) and theirs not in (None, {}):
            setattr(new.metrics, f.name, theirs)
    new.metrics.extra = {**old.metrics.extra, **new.metrics.extra}
    return new


class RunDir:
    """A run directory (see the module docstring).

    Args:
        path: the directory; nothing is created until something is written.

    Example:
        >>> run = RunDir("demo-run")                      # doctest: +SKIP
        >>> [v.label for v in run.variants()]             # doctest: +SKIP
        ['baseline (builtin:smollm2-135m)', 'prune layers=6,ffn=0.25', ...]
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def cache(self) -> Path:
        return self.path / "cache"

    @property
    def variants_file(self) -> Path:
        return self.path / VARIANTS_FILE

    @property
    def info_file(self) -> Path:
        return self.path / INFO_FILE

    def is_run(self) -> bool:
        """True when the directory holds run metadata written by slimlm."""
        return self.info_file.is_file() or self.variants_file.is_file()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive advisory lock on the run (workers of one search may share the directory)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- reading -----------------------------------------------------------------------------------------
    def info(self) -> dict:
        """``run.json`` as a dict ({} when absent). Raises `RunDirError` when it is not a JSON object."""
        if not self.info_file.is_file():
            return {}
        try:
            d = json.loads(self.info_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RunDirError(f"{self.info_file} is not valid JSON; delete it to start a new run there, or pass "
                              "another directory.") from None
        if not isinstance(d, dict):
            raise RunDirError(f"{self.info_file} is not a JSON object; pass a directory written by slimlm.")
        return d

    def variants(self, *, required: bool = False) -> list[Variant]:
        """Every variant, the baseline first, then in the order they were written.

        Raises:
            RunDirError: a corrupt line; or, with ``required``, no variants file or an empty one.
        """
        f = self.variants_file
        if not f.is_file():
            if required:
                raise RunDirError(f"{self.path} has no {VARIANTS_FILE}; run `slimlm compress` or `slimlm search` "
                                  f"with --out {self.path} first, or pass the directory they wrote.")
            return []
        out = []
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise RunDirError(f"{f} is not text; pass a run directory written by slimlm.") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RunDirError(f"{f} line {n} is not valid JSON ({exc.msg}); delete that line or rerun the "
                                  "pipeline to rewrite it.") from None
            if not isinstance(d, dict) or not isinstance(d.get("id"), str):
                raise RunDirError(f"{f} line {n} is not a variant (an object with an id); delete that line or "
                                  "rerun the pipeline.")
            try:
                out.append(Variant.from_dict(d))
            except TypeError:
                raise RunDirError(f"{f} line {n} has fields of the wrong type; delete that line or rerun the "
                                  "pipeline.") from None
        if required and not out:
            raise RunDirError(f"{f} is empty; rerun `slimlm compress` or `slimlm search` to measure variants.")
        out.sort(key=lambda v: not v.is_baseline)
        return out

    def variant(self, vid: str) -> Variant:
        for v in self.variants(required=True):
            if v.id == vid:
                return v
        raise RunDirError(f"{self.path} has no variant {vid!r}; `slimlm report {self.path} --json` lists them.")

    def baseline(self) -> Variant | None:
        return next((v for v in self.variants() if v.is_baseline), None)

    def model_path(self, v: Variant) -> str:
        """Where a variant's model is: a directory inside the run, or the baseline's model spec."""
        if not v.path:
            raise RunDirError(f"variant {v.id} of {self.path} was not saved.")
        p = Path(v.path)
        if v.is_baseline and not p.is_absolute() and not (self.path / p).exists():
            return v.path  # a spec such as builtin:smollm2-135m
        return str(p if p.is_absolute() else self.path / p)

    # -- writing -----------------------------------------------------------------------------------------
    def update_info(self, values: Mapping[str, Any], *, keep: Iterable[str] = ()) -> dict:
        """Write ``run.json`` = ``values`` plus the keys in ``keep`` that an earlier writer set. Locked."""
        with self.lock():
            prev = self.info() if self.info_file.is_file() else {}
            info = {**{k: prev[k] for k in keep if k in prev}, **values}
            info.setdefault("created", prev.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            info["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            write_json_atomic(self.info_file, info)
            return info

    def write_variants(self, variants: Iterable[Variant]) -> list[Variant]:
        """Merge ``variants`` into ``variants.jsonl`` (keeping what other workers measured), align latencies
        on the baseline's latest timing, and write the file atomically. Locked. Returns what was written."""
        with self.lock():
            merged = {v.id: v for v in self.variants()}
            for v in variants:
                merged[v.id] = _merge(merged[v.id], v) if v.id in merged else v
            rows = sorted(merged.values(), key=lambda v: not v.is_baseline)
            align_latency(rows)
            text = "".join(json.dumps(v.to_dict(), default=str) + "\n" for v in rows)
            write_text_atomic(self.variants_file, text)
            return rows

    # -- decisions -----------------------------------------------------------------------------------------
    @property
    def decisions_dir(self) -> Path:
        return self.path / DECISIONS_DIR

    def decision_numbers(self) -> list[int]:
        """The recorded decisions' numbers, oldest first."""
        d = self.decisions_dir
        if not d.is_dir():
            return []
        return sorted(int(m.group(1)) for p in d.iterdir() if (m := _DECISION.match(p.name)))

    def read_decision(self, number: int) -> dict:
        """Decision ``number`` as recorded. Raises `RunDirError` when absent or corrupt."""
        path = self.decisions_dir / f"{number:04d}.json"
        if not path.is_file():
            have = ", ".join(map(str, self.decision_numbers())) or "none"
            raise RunDirError(f"decision {number} is not recorded in {self.path} (recorded: {have}); list them "
                              f"with `slimlm decide {self.path} --list`.")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RunDirError(f"{path} is not valid JSON; record a new decision with `slimlm decide`.") from None
        if not isinstance(d, dict) or not all(isinstance(d.get(k), (dict, type(None))) for k in ("variant", "baseline")):
            raise RunDirError(f"{path} is not a decision record; record a new one with `slimlm decide`.")
        return d

    def add_decision(self, record: Mapping[str, Any]) -> dict:
        """Record a new decision under the next number and return it with its ``number``. A decision file is
        created once (hard link of a complete temp file, which fails if the name exists), so two concurrent
        writers never share a number and a reader never sees half a file."""
        d = self.decisions_dir
        d.mkdir(parents=True, exist_ok=True)
        while True:
            n = (self.decision_numbers() or [0])[-1] + 1
            rec = {**record, "number": n}
            tmp = d / f".{n:04d}.json.tmp{os.getpid()}"
            tmp.write_text(json.dumps(rec, indent=2, default=str) + "\n", encoding="utf-8")
            try:
                os.link(tmp, d / f"{n:04d}.json")
                return rec
            except FileExistsError:
                continue
            finally:
                tmp.unlink(missing_ok=True)
