"""Report: turn a run directory into ``report.html`` (the trade-off, with plots) and ``decision.md`` (the choice).

`write_report` is the one entry point; the pipeline calls it at the end of ``compress`` / ``search``, and
``slimlm report DIR`` calls it to re-render with other business inputs or another quality bar. It reads only
the run directory (no model is loaded), so re-rendering takes a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slimlm._io import rewrite_unedited
from slimlm.errors import ConfigError
from slimlm.report.business import Inputs, business_table
from slimlm.report.decision import render_decision
from slimlm.report.html import render_html
from slimlm.report.run import Run, RunDirError, load_run, run_warnings
from slimlm.runs import Variant
from slimlm.search.frontier import (
    OBJECTIVES,
    TIERS,
    Selection,
    drop_name,
    normalised_hypervolume,
    not_runnable,
    pareto_front,
    parse_drop,
    parse_ood_drop,
    saved_ood_guard,
    select,
    value,
)

__all__ = ["RunDirError", "write_report", "load_run", "Inputs"]


def _headline(sel: Selection, base: Variant | None, biz: dict) -> dict[str, str]:
    v = sel.chosen or sel.closest

    def ratio(k, word_lo, invert=False):
        a, b = value(v, k), value(base, k) if base else None
        if not a or not b:
            return "–"
        r = (a / b) if invert else (b / a)
        return f"{r:.2f}× {word_lo}" if r >= 1 or word_lo != "faster" else f"{1 / r:.2f}× slower"

    size = "–"
    a, b = value(v, "disk_mb"), value(base, "disk_mb") if base else None
    if a and b:
        size = f"{(a / b - 1) * 100:+.0f}%"
    row = (biz.get(v.id) if v else None) or {}
    d, od = value(v, "quality_drop"), value(v, "ood_quality_drop")
    return {
        "speedup": ratio("latency_p50_ms", "faster"),
        "size": size,
        "drop": f"{d * 100:+.2f}%" if d is not None else "–",
        "ood_drop": f"{od * 100:+.2f}%" if od is not None else "–",
        "usd": f"${row['savings_usd_per_month']:,.2f}" if row.get("savings_usd_per_month") is not None else "–",
        "co2": f"{row['savings_kg_co2e_per_year']:,.1f} kg" if row.get("savings_kg_co2e_per_year") is not None else "–",
    }


def _selection_settings(info: dict, tier, max_drop, objective, max_latency_ms, max_memory_mb,
                        max_ood_drop=None) -> dict:
    """Arguments override run.json's ``selection``; run.json overrides the defaults (medium tier, latency)."""
    saved = info.get("selection") or {}
    if tier is not None and tier not in TIERS:
        raise ConfigError(f"--tier {tier!r} is unknown; use one of {', '.join(TIERS)} (or --max-drop 2%).")
    if max_drop is not None:
        drop = parse_drop(max_drop)
    elif tier is not None:
        drop = parse_drop(tier)
    elif saved.get("max_drop") is not None:
        drop = parse_drop(saved["max_drop"], recorded=True)
    else:
        drop = TIERS.get(saved.get("tier") or "medium", TIERS["medium"])
    return {
        "max_drop": drop,
        "objective": objective or saved.get("objective") or "latency",
        "max_latency_ms": max_latency_ms if max_latency_ms is not None else saved.get("max_latency_ms"),
        "max_memory_mb": max_memory_mb if max_memory_mb is not None else saved.get("max_memory_mb"),
        "max_ood_drop": parse_ood_drop(max_ood_drop) if max_ood_drop is not None else saved_ood_guard(saved),
    }


def write_report(run_dir: str | Path, *, traffic_per_day: float = 100_000, price_per_hour: float = 0.10,
                 grid_gco2_per_kwh: float = 475.0, tier: str | None = None, max_drop: str | float | None = None,
                 objective: str | None = None, max_latency_ms: float | None = None,
                 max_memory_mb: float | None = None, max_ood_drop: str | float | None = None,
                 objectives: Sequence[str] | None = None,
                 prefill_tokens: int = 128, decode_tokens: int = 64, force: bool = False) -> dict[str, Any]:
    """Write ``report.html`` and ``decision.md`` into ``run_dir`` (atomically) and return what was decided.

    Either file changed since slimlm wrote it (your sign-off in ``decision.md``, say) is kept: `OutputError`,
    nothing written, unless ``force``.

    Selection settings come from the arguments, else from ``run.json``'s ``selection``, else the medium
    tier, the latency objective and the default out-of-domain guard. The frontier is over ``objectives``, else ``run.json``'s
    ``objectives``, else quality drop and the selection objective's metric.

    Args:
        run_dir: a directory with ``variants.jsonl`` (and ideally ``run.json``; ``sensitivity.json`` optional).
        traffic_per_day: requests per day for the business figures.
        price_per_hour: USD per machine-hour.
        grid_gco2_per_kwh: grid carbon intensity.
        tier: ``critical`` | ``high`` | ``medium``.
        max_drop: a quality bar that overrides ``tier`` (``"1%"``, ``0.01``).
        objective: ``latency`` | ``size`` | ``memory`` | ``energy``.
        max_latency_ms: p50 latency SLO at the primary shape.
        max_memory_mb: peak-memory SLO.
        max_ood_drop: the out-of-domain guard (``"10%"``, ``0.1``; ``"none"`` turns it off); default: the one
            in ``run.json``, else `slimlm.search.DEFAULT_MAX_OOD_DROP`.
        objectives: metric names for the frontier and hypervolume.
        prefill_tokens: prompt tokens per request.
        decode_tokens: generated tokens per request.

    Returns:
        ``{"report", "decision", "selected", "met", "closest", "rule", "reason", "frontier", "hypervolume",
        "objectives", "selection", "guard", "excluded_by_guard", "runtime", "warnings"}``; paths as strings,
        ids of variants (``runtime``: where the latencies were measured, ``{"name", "label", "threads"}``;
        ``warnings``: one-line warnings about the measurements).

    Raises:
        RunDirError: the directory has no (valid) ``variants.jsonl``.
        ConfigError: an unknown tier, objective or an unparseable ``max_drop``.

    Example:
        >>> res = write_report("runs/quick", traffic_per_day=1e6, tier="high")
        >>> res["selected"], res["met"]
    """
    run: Run = load_run(run_dir)
    settings = _selection_settings(run.info, tier, max_drop, objective, max_latency_ms, max_memory_mb, max_ood_drop)
    sel = select(run.variants, **settings)
    objs = list(objectives or run.info.get("objectives") or ["quality_drop", OBJECTIVES[sel.objective]])
    runnable = [v for v in run.variants if not not_runnable(v)]  # the deployment runtime took them
    front = [runnable[i].id for i in pareto_front(runnable, objs)]
    hv = normalised_hypervolume(runnable, objs)
    inputs = Inputs(traffic_per_day=traffic_per_day, price_per_hour=price_per_hour,
                    grid_gco2_per_kwh=grid_gco2_per_kwh, prefill_tokens=prefill_tokens,
                    decode_tokens=decode_tokens, primary_shape=run.info.get("primary_shape") or "1x128")
    biz = business_table(run.variants, inputs)
    html = render_html(run, sel, frontier_ids=front, objectives=objs, hypervolume=hv, biz=biz, inputs=inputs,
                       headline=_headline(sel, run.baseline, biz))
    warnings = run_warnings(run)
    md = render_decision(run.dir, run.info, sel, run.baseline, biz, inputs, drop_name(run.variants),
                         runtime=run.runtime, warnings=warnings)
    report, decision = run.dir / "report.html", run.dir / "decision.md"
    rewrite_unedited({report: html, decision: md}, force=force,
                     fix=f"rename it, or replace it with `slimlm report {run.dir} --force`")
    s = sel.to_dict()
    return {"report": str(report), "decision": str(decision), "selected": s["selected"], "met": s["met"],
            "closest": s["closest"], "rule": s["rule"], "reason": s["reason"], "frontier": front,
            "hypervolume": hv, "objectives": objs, "selection": s, "business": biz, "guard": s["guard"],
            "excluded_by_guard": s["excluded_by_guard"], "runtime": run.runtime, "warnings": warnings}

from slimlm._verbs import make_callable  # noqa: E402

make_callable(__name__, "slimlm.report:write_report")  # `slimlm.report(...)` calls the public verb
