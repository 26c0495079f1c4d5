"""Read a run directory (``run.json``, ``variants.jsonl``, optional ``sensitivity.json``) for the report.

Reading is forgiving where the pipeline may legitimately leave gaps (no ``run.json``, a null metric, an
unknown sensitivity format) and strict where a report would be meaningless (no variants file, a corrupt
line): those raise `RunDirError` with one sentence that names the file and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from slimlm.errors import SlimlmError


class RunDirError(SlimlmError):
    """A run directory that cannot be reported on."""


@dataclass
class Run:
    """What the report needs from a run directory.

    Attributes:
        dir: the run directory.
        info: ``run.json`` (empty when absent).
        variants: one dict per line of ``variants.jsonl``, baseline first.
        sensitivity: a list of sensitivity tables in the ``slimlm sensitivity --json`` format (may be empty).
        notes: problems worth telling the reader (an unknown sensitivity format, no baseline).
    """

    dir: Path
    info: dict
    variants: list[dict]
    sensitivity: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def baseline(self) -> dict | None:
        return next((v for v in self.variants if v.get("is_baseline")), None)


def _sensitivity_tables(obj) -> list[dict] | None:
    """Known format: one table ``{"kind", "rows": [{"layer", "ratio", "value", "ratio_to_baseline"}]}``,
    or a list of them (several kinds). Anything else: None."""
    tables = obj if isinstance(obj, list) else [obj]
    ok = []
    for t in tables:
        rows = t.get("rows") if isinstance(t, dict) else None
        if not isinstance(rows, list) or not rows:
            return None
        if not all(isinstance(r, dict) and "layer" in r and "ratio" in r
                   and ("ratio_to_baseline" in r or "value" in r) for r in rows):
            return None
        ok.append(t)
    return ok


def load_run(run_dir: str | Path) -> Run:
    """Read the run directory written by ``slimlm compress`` / ``slimlm search``.

    Raises:
        RunDirError: when the directory or ``variants.jsonl`` is missing, empty or corrupt.
    """
    d = Path(run_dir)
    if not d.is_dir():
        raise RunDirError(f"{d} is not a directory; pass the run directory written by `slimlm compress` or "
                          "`slimlm search`.")
    vfile = d / "variants.jsonl"
    if not vfile.is_file():
        raise RunDirError(f"{d} has no variants.jsonl; run `slimlm compress` or `slimlm search` with --out {d} "
                          "first, or pass the directory they wrote.")
    variants = []
    for n, line in enumerate(vfile.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            v = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{vfile} line {n} is not valid JSON ({exc.msg}); delete that line or rerun the "
                              "pipeline to rewrite it.") from None
        if not isinstance(v, dict) or "id" not in v:
            raise RunDirError(f"{vfile} line {n} is not a variant (an object with an id); delete that line or "
                              "rerun the pipeline.")
        v.setdefault("metrics", {})
        v["metrics"] = v["metrics"] or {}
        variants.append(v)
    if not variants:
        raise RunDirError(f"{vfile} is empty; rerun `slimlm compress` or `slimlm search` to measure variants.")
    variants.sort(key=lambda v: not v.get("is_baseline"))  # stable: baseline first, then pipeline order

    info: dict = {}
    notes: list[str] = []
    rfile = d / "run.json"
    if rfile.is_file():
        try:
            info = json.loads(rfile.read_text(encoding="utf-8")) or {}
        except json.JSONDecodeError:
            notes.append("run.json is not valid JSON; the run's settings and machine are not shown.")
    else:
        notes.append("run.json is missing; the run's settings and machine are not shown.")
    if not any(v.get("is_baseline") for v in variants):
        notes.append("No baseline variant (is_baseline: true); savings against it cannot be computed.")
    elif _align_latency(variants):
        notes.append("Latencies of variants profiled in earlier sessions are restated on the baseline's latest "
                     "timing through their interleaved speedup ratios (ratios are what survives machine drift).")

    sens: list[dict] = []
    sfile = d / "sensitivity.json"
    if sfile.is_file():
        try:
            tables = _sensitivity_tables(json.loads(sfile.read_text(encoding="utf-8")))
        except json.JSONDecodeError:
            tables = None
        if tables is None:
            notes.append("sensitivity.json is not in the `slimlm sensitivity --json` format; heat map skipped.")
        else:
            sens = tables
    return Run(d, info if isinstance(info, dict) else {}, variants, sens, notes)


def _align_latency(variants: list[dict]) -> int:
    """Put every variant's p50 latency on the baseline's latest timing: ``base p50 / its measured speedup``.

    A search profiles each trial's variant with the baseline at that moment; absolute times from different
    moments are not comparable on a shared machine, their interleaved ratios are. Returns how many changed.
    """
    base = next(v for v in variants if v.get("is_baseline"))["metrics"]
    base_lat = base.get("latency_ms") or {}
    changed = 0
    for v in variants:
        m = v["metrics"]
        ratios, lat = m.get("ratios") or {}, m.get("latency_ms") or {}
        if v.get("is_baseline") or not isinstance(lat, dict):
            continue
        for shape, entry in lat.items():
            speedup, ref = ratios.get(f"prefill_speedup_{shape}"), (base_lat.get(shape) or {}).get("p50")
            if not (speedup and ref and isinstance(entry, dict) and entry.get("p50")):
                continue
            aligned = ref / speedup
            if abs(aligned - entry["p50"]) > 1e-6 * aligned:
                entry["p50"] = aligned
                changed += 1
        first = next(iter(lat.values()), None)
        if isinstance(first, dict) and first.get("p50"):
            m["latency_p50_ms"] = first["p50"]
    return changed
