"""Read a run directory (``run.json``, ``variants.jsonl``, optional ``sensitivity.json``) for the report.

Reading is forgiving where the pipeline may legitimately leave gaps (no ``run.json``, a null metric, an
unknown sensitivity format) and strict where a report would be meaningless (no variants file, a corrupt
line): those raise `RunDirError` with one sentence that names the file and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from slimlm.profile.cpu import int8_slow_warning
from slimlm.runs import RunDir, RunDirError, Variant

RUNTIME_NAMES = {"torch": "PyTorch eager", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO",
                 "llamacpp": "llama.cpp"}


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
    variants: list[Variant]
    sensitivity: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def baseline(self) -> Variant | None:
        return next((v for v in self.variants if v.is_baseline), None)

    @property
    def runtime(self) -> dict:
        """Where the latencies were measured: ``{"name", "label", "threads"}`` (torch for runs from before
        ``--runtime``; threads from the baseline's profile when run.json does not say)."""
        rt = dict(self.info.get("runtime") or {})
        rt.setdefault("name", "torch")
        if rt.get("threads") is None:
            base = self.baseline
            rt["threads"] = base.metrics.threads if base else None
        rt["label"] = RUNTIME_NAMES.get(rt["name"], rt["name"])
        return rt


def _int8_dynamic(v: Variant) -> bool:
    for st in v.stages:
        cfg = st.get("config") or {}
        target = cfg.get("target") if isinstance(cfg.get("target"), dict) else {}
        if st.get("kind") == "quantize" and "int8-dynamic" in (cfg.get("scheme"), target.get("scheme")):
            return True
    return False


def run_warnings(run: Run) -> list[str]:
    """One-line warnings about how the latencies were measured: variants the deployment runtime could not
    take, and int8-dynamic variants timed on a CPU without fast int8 GEMM instructions."""
    out = []
    rt = run.runtime
    skipped = [v for v in run.variants if v.metrics.get("runtime_not_measured")]
    if skipped:
        out.append(f"{len(skipped)} variant(s) could not run on {rt['label']} and have no latency there, so they are "
                   "never selected: " + "; ".join(f"{v.label or v.id}: {v.metrics.get('runtime_not_measured')}"
                                                   for v in skipped))
    timed_int8 = [v for v in run.variants if _int8_dynamic(v) and v.metrics.latency_p50_ms is not None]
    machine = run.info.get("machine") or {}
    warn = int8_slow_warning(machine.get("int8_gemm"))
    if timed_int8 and warn:
        out.append(warn + ".")
    elif timed_int8 and machine.get("int8_matmul") == "fp32" and (machine.get("int8_gemm") or {}).get("fast"):
        out.append("int8-dynamic variants were timed with their integer products summed in fp32: this CPU has "
                   f"int8 dot-product instructions ({', '.join(machine['int8_gemm'].get('instructions') or [])}) "
                   "but torch's int8 kernel measured slower when the run started (a busy machine?); re-run on a "
                   "quiet one, or set SLIMLM_INT8_MATMUL=int.")
    return out


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
    run = RunDir(d)
    variants = run.variants(required=True)
    notes: list[str] = []
    try:
        info = run.info()
    except RunDirError:
        info = {}
        notes.append("run.json is not valid JSON; the run's settings and machine are not shown.")
    if not run.info_file.is_file():
        notes.append("run.json is missing; the run's settings and machine are not shown.")
    if not any(v.is_baseline for v in variants):
        notes.append("No baseline variant (is_baseline: true); savings against it cannot be computed.")
    elif any(lat.measured_p50 is not None for v in variants for lat in v.metrics.latency_ms.values()):
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
    run_ = Run(d, info, variants, sens, notes)
    run_.notes.extend(run_warnings(run_))
    return run_
