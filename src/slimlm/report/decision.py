"""The decision record (``decision.md``): what to deploy, the rule that chose it, the evidence, and the way back.

It is written for a reviewer who will not open the HTML: plain Markdown, the numbers beside the baseline's,
and the outcome in the first line. When nothing meets the bar it says so before anything else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slimlm.report.business import Inputs
from slimlm.report.html import duration, fmt, hardware_note, pct, stage_text
from slimlm.runs import Variant
from slimlm.search.frontier import Selection, drop_name, value


def _path(run_dir: Path, v: Variant | None) -> str:
    if not v or not v.path:
        return "(not saved)"
    if re.match(r"^[a-z][a-z0-9+.-]*:", v.path):  # a model spec (builtin:…, tiny:…), not a directory
        return str(v.path)
    p = Path(v.path)
    return str(p if p.is_absolute() else run_dir / p)


def _evidence(v: Variant, base: Variant | None, shape: str, dname: str) -> list[str]:
    rows = [("measure", "this variant", "baseline", "change"), ("---", "---:", "---:", "---:")]

    def add(label, key, unit="", change=None, show=fmt, source=None):
        this, that = source or (v, base)
        a, b = value(this, key), value(that, key) if that else None
        if a is None and b is None:
            return
        ch = change(a, b) if change and a is not None and b is not None else ""
        rows.append((label, f"{show(a)}{unit}" if a is not None else "–", f"{show(b)}{unit}" if b is not None else "–", ch))

    def rel(a, b):
        return f"{(a / b - 1) * 100:+.1f}%" if b else ""

    add("perplexity (in domain)", "perplexity", change=lambda a, b: f"{pct(value(v, 'quality_drop'))} {dname}")
    corpora = list((base.metrics.ood if base else None) or v.metrics.ood)
    if len(corpora) > 1:  # one row per --ood-data corpus; the guard reads the worst
        for c in corpora:
            x, y = v.metrics.ood.get(c) or {}, (base.metrics.ood.get(c) or {}) if base else {}
            add(f"perplexity (out of domain: {c})", "perplexity", change=lambda a, b, x=x: f"{pct(value(x, 'quality_drop'))} {dname}",
                show=fmt, source=(x, y))
    else:
        add("perplexity (out of domain)", "ood_perplexity", change=lambda a, b: f"{pct(value(v, 'ood_quality_drop'))} {dname}")
    add("accuracy", "accuracy", change=rel)
    add("F1", "f1", change=rel)
    add("calibration (ECE)", "ece", change=lambda a, b: f"{a - b:+.3f}")
    add("teacher top-1 agreement", "teacher_top1", show=lambda x: pct(x, signed=False))
    add(f"latency p50 {shape}", "latency_p50_ms", " ms", lambda a, b: (f"{b / a:.2f}× faster" if b >= a else f"{a / b:.2f}× slower") if a else "")
    add(f"latency p99 {shape}", "latency_p99_ms", " ms", rel)
    add("decode", "decode_tokens_per_s", " tok/s", lambda a, b: f"{a / b:.2f}×" if b else "")
    add("disk", "disk_mb", " MB", rel)
    add("peak memory", "peak_rss_mb", " MB", rel)
    add("params", "params", "", rel)
    add("energy per 1k tokens", "energy_j_per_1k_tokens", " J", rel)
    return ["| " + " | ".join(r) + " |" for r in rows]


def render_decision(run_dir: Path, info: Mapping[str, Any], sel: Selection, base: Variant | None,
                    biz: Mapping[str, Mapping[str, Any]], inputs: Inputs, dname: str | None = None,
                    runtime: Mapping[str, Any] | None = None, warnings: Sequence[str] = ()) -> str:
    """Markdown for ``decision.md``.

    Args:
        run_dir: the run directory (variant paths are relative to it).
        info: ``run.json``.
        sel: the selection.
        base: the baseline variant, if any.
        biz: `business_table` output by variant id.
        inputs: the business assumptions.
        dname: name of the quality measure (``perplexity drop``); derived when None.
        runtime: where the latencies were measured (`slimlm.report.run.Run.runtime`); None: not stated.
        warnings: one-line warnings about the measurements (`slimlm.report.run.run_warnings`).
    """
    v = sel.chosen or sel.closest
    dname = dname or drop_name([x for x in (v, base) if x])
    shape = inputs.primary_shape
    lines = [f"# Decision: {info.get('model', 'model')} on {info.get('data', 'data')}", ""]
    if sel.met and sel.chosen is not None:
        if sel.chosen.is_baseline:
            lines += ["**Keep the baseline.** No compressed variant beats it under the rule.", ""]
        else:
            lines += [f"**Deploy `{sel.chosen.id}`: {stage_text(sel.chosen)}.**", "",
                      f"- Path: `{_path(run_dir, sel.chosen)}`"]
    else:
        lines += ["**No variant meets the bar.** Nothing is recommended for deployment under this rule.", ""]
        if v is not None:
            lines += [f"- Closest variant: `{v.id}`: {stage_text(v)}", f"- Path: `{_path(run_dir, v)}`"]
    lines += [f"- Rule: {sel.rule}."] + ([f"- {sel.guard}"] if sel.guard else []) + [f"- Outcome: {sel.reason}"]
    if runtime:
        rt = (f"- Latency measured on: {runtime.get('label') or runtime.get('name')} (`--runtime {runtime.get('name')}`"
              + (f", {runtime['threads']} thread(s)" if runtime.get("threads") else "") + ")")
        if v is not None and v.metrics.get("runtime_precision"):
            rt += f"; this variant ran as {v.metrics.get('runtime_format')} {v.metrics.get('runtime_precision')}"
            if v.metrics.get("runtime_as_brought"):
                rt += f", the file as brought: `{v.metrics.get('runtime_export')}`"
            elif v.metrics.get("runtime_export"):
                rt += f", exported to `{run_dir / str(v.metrics.get('runtime_export'))}`"
        lines += [rt + "."]
    lines += [f"- Warning: {w}" for w in warnings]
    lines += [""]
    if v is None:
        return "\n".join(lines) + "\n"
    if v.is_baseline:
        return "\n".join(lines + ["Nothing to roll back: the baseline stays in service. Every variant and its trade-off "
                                  f"is in `{run_dir / 'report.html'}`; a looser tier or another objective may change the "
                                  "answer (`slimlm report --tier`, `--objective`)."]) + "\n"

    lines += ["## Evidence", "", *_evidence(v, base, shape, dname), ""]
    b, bb = biz.get(str(v.id)) or {}, (biz.get(base.id) if base else None) or {}
    if b.get("usd_per_month") is not None:
        lines += [f"At {fmt(inputs.traffic_per_day)} requests/day ({inputs.prefill_tokens} + {inputs.decode_tokens} tokens), "
                  f"USD {inputs.price_per_hour:.2f}/machine-hour and {inputs.grid_gco2_per_kwh:g} g CO2e/kWh: "
                  f"USD {b['usd_per_month']:.2f}/month"
                  + (f" vs {bb['usd_per_month']:.2f} for the baseline" if bb.get("usd_per_month") is not None else "")
                  + (f" (saves USD {b['savings_usd_per_month']:.2f}/month, {pct(b['savings_pct'], False)})"
                     if b.get("savings_usd_per_month") is not None else "")
                  + (f"; saves {fmt(b['savings_kg_co2e_per_year'])} kg CO2e/year"
                     if b.get("savings_kg_co2e_per_year") is not None else "") + ".", ""]

    lines += ["## What was traded", ""]
    stages = v.stages
    if stages:
        lines += [f"- Stages: {' → '.join(str(s.get('kind')) for s in stages)} ({stage_text(v)})."]
    d, od = value(v, "quality_drop"), value(v, "ood_quality_drop")
    if d is not None:
        worst = v.metrics.ood_worst if len(v.metrics.ood) > 1 else None
        lines += [f"- In-domain {dname}: {pct(d)}" + (f"; out of domain: {pct(od)}" if od is not None else "")
                  + (f" (the worst of {len(v.metrics.ood)} corpora, on {worst})" if od is not None and worst else "")
                  + ("; the out-of-domain drop is larger: check the inputs you serve resemble the eval data."
                     if od is not None and od > 1.5 * max(d, 0.001) else ".")]
    rec = v.recovery
    if value(rec, "tokens") or value(rec, "seconds"):
        lines += [f"- Recovery cost: {fmt(int(value(rec, 'tokens') or 0))} distillation tokens, "
                  f"{duration(value(rec, 'seconds') or 0)} of training."]
    lines += [f"- Hardware: {hardware_note(v, shape)}.", ""]

    lines += ["## Roll back", "",
              "Serve the baseline again:" if base else "No baseline was recorded in this run; roll back to the model you started from:",
              ""]
    if base:
        saved = base.path and _path(run_dir, base) != info.get("model")
        lines += [f"- Baseline `{base.id}`: `{info.get('model', '?')}`" + (f", saved at `{_path(run_dir, base)}`" if saved else ""),
                  f"- Reload it with `slimlm.models.load({str(_path(run_dir, base) if base.path else info.get('model', '?'))!r})`."]
    else:
        lines += [f"- `{info.get('model', '?')}`"]
    lines += ["", f"Full report with plots: `{run_dir / 'report.html'}`."]
    return "\n".join(lines) + "\n"
