"""Versioned decisions: ``decisions/0001.json``, ``0002.json``, … in a run directory, append-only.

``decision.md`` says what the latest rule selects; a server needs more: *which* decision it serves, the
variant's path and recorded metrics, the quality bound it must stay inside, and the business inputs behind
the cost forecast. Each `record_decision` call writes one new numbered JSON record and never touches the old
ones, so a rollback is "serve decision N again" and the history of what was signed off stays readable.

Selection is not re-implemented here: `record_decision` calls `slimlm.report.write_report` (which also
rewrites ``report.html`` and ``decision.md``, as ``slimlm report --tier`` does) and records its result. A
hand-pinned variant (``variant=ID``) is recorded with the tier's bound and whether it meets it, but leaves
``decision.md`` alone (that file describes the rule's choice).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from slimlm.errors import SlimlmError
from slimlm.report import _selection_settings, write_report
from slimlm.report.business import J_PER_KWH, Inputs, business_table
from slimlm.report.html import stage_text
from slimlm.report.run import load_run
from slimlm.runs import RunDir, RunDirError, Variant
from slimlm.search.frontier import TIERS, ood_guard_option, select, value


class DecisionError(SlimlmError):
    """A decision that does not exist or cannot be served."""


def _tier_name(max_drop: float) -> str | None:
    return next((name for name, bound in TIERS.items() if abs(bound - max_drop) < 1e-12), None)


def _numbers(run_dir: Path) -> list[int]:
    return RunDir(run_dir).decision_numbers()


def _variant_record(run_dir: Path, v: Variant | None) -> dict | None:
    if v is None:
        return None
    path = RunDir(run_dir).model_path(v) if v.path else None
    if path and not re.match(r"^[a-z][a-z0-9+.-]*:", path):
        path = str(Path(path).resolve())
    return {"id": v.id, "label": v.label, "is_baseline": v.is_baseline, "recipe": stage_text(v), "path": path,
            "run_path": v.path, "stages": v.stages, "metrics": v.metrics.to_dict()}


def _forecast(row: dict, inputs: Inputs) -> dict:
    j = row.get("j_per_request")
    return {"seconds_per_request": row.get("seconds_per_request"),
            "usd_per_1k_requests": row.get("usd_per_1k_requests"), "busy_power_w": row.get("busy_power_w"),
            "g_co2e_per_request": j / J_PER_KWH * inputs.grid_gco2_per_kwh if j is not None else None,
            "prefill_only": row.get("prefill_only")}


def _write_new(run_dir: Path, record: dict) -> dict:
    return RunDir(run_dir).add_decision(record)


def build_decision(run_dir: str | Path, *, tier: str | None = None, max_drop: str | float | None = None,
                   objective: str | None = None, max_latency_ms: float | None = None,
                   max_memory_mb: float | None = None, variant: str | None = None,
                   inputs: Inputs | None = None, note: str | None = None, write_files: bool = False,
                   max_ood_drop: str | float | None = None) -> dict:
    """The decision record for the current rule (or a pinned variant), without numbering or saving it.

    Args:
        run_dir: the run directory.
        tier, max_drop, objective, max_latency_ms, max_memory_mb, max_ood_drop: the rule, as for ``slimlm
            report`` (``max_ood_drop="none"`` turns the out-of-domain guard off); unset ones come from
            ``run.json``'s ``selection``.
        variant: pin this variant id instead of the rule's choice (the rule still sets the quality bound).
        inputs: business assumptions for the cost forecast (defaults as ``slimlm report``).
        note: free text kept in the record (why this decision was taken).
        write_files: also rewrite ``report.html`` and ``decision.md`` (only for a rule's choice).

    Returns:
        The record (see `record_decision`), with ``number`` 0.
    """
    run_dir = Path(run_dir)
    inputs = inputs or Inputs()
    run = load_run(run_dir)
    inputs = Inputs(**{**asdict(inputs), "primary_shape": run.info.get("primary_shape") or inputs.primary_shape})
    settings = _selection_settings(run.info, tier, max_drop, objective, max_latency_ms, max_memory_mb, max_ood_drop)
    if write_files and variant is None:
        res = write_report(run_dir, traffic_per_day=inputs.traffic_per_day, price_per_hour=inputs.price_per_hour,
                           grid_gco2_per_kwh=inputs.grid_gco2_per_kwh,
                           max_drop=f"{settings['max_drop'] * 100:.12g}%",  # parsed already: 2.0 is 200%
                           objective=settings["objective"], max_latency_ms=settings["max_latency_ms"],
                           max_memory_mb=settings["max_memory_mb"],
                           max_ood_drop=ood_guard_option(settings["max_ood_drop"]),
                           prefill_tokens=inputs.prefill_tokens,
                           decode_tokens=inputs.decode_tokens)
        chosen_id, met, rule, reason = res["selected"], res["met"], res["rule"], res["reason"]
        frontier, objectives, closest = res["frontier"], res["objectives"], res["closest"]
    else:
        from slimlm.search.frontier import OBJECTIVES, pareto_front

        sel = select(run.variants, **settings)
        objectives = list(run.info.get("objectives") or ["quality_drop", OBJECTIVES[sel.objective]])
        frontier = [run.variants[i].id for i in pareto_front(run.variants, objectives)]
        summary = sel.to_dict()
        chosen_id, met, rule, reason = summary["selected"], sel.met, sel.rule, sel.reason
        closest = summary["closest"]
    by_id = {v.id: v for v in run.variants}
    if variant is not None:
        if variant not in by_id:
            raise DecisionError(f"variant {variant!r} is not in {run_dir / 'variants.jsonl'}; pass one of: "
                                f"{', '.join(by_id)}.")
        chosen_id = variant
        drop = value(by_id[variant], "quality_drop")
        met = drop is not None and drop <= settings["max_drop"] + 1e-12
        rule = f"pinned by hand (quality bound of the rule: {rule})"
        reason = (f"{variant} was pinned; its recorded drop {'is within' if met else 'is beyond or lacks'} "
                  f"the bound of {settings['max_drop'] * 100:.3g}%.")
    biz = business_table(run.variants, inputs)
    chosen = by_id.get(str(chosen_id)) if chosen_id else None
    return {
        "number": 0, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "run": run_dir.name,
        "model": run.info.get("model"), "data": run.info.get("data"), "data_path": run.info.get("data_path"),
        "primary_shape": inputs.primary_shape, "options": run.info.get("options") or {},
        "tier": _tier_name(settings["max_drop"]), **settings, "pinned": variant is not None,
        "selected": chosen_id, "met": met, "closest": closest, "rule": rule, "reason": reason, "note": note,
        "variant": _variant_record(run_dir, chosen), "baseline": _variant_record(run_dir, run.baseline),
        "frontier": frontier, "objectives": objectives, "inputs": asdict(inputs),
        "forecast": _forecast(biz.get(str(chosen_id)) or {}, inputs) if chosen else None,
    }


def record_decision(run_dir: str | Path, **kwargs: Any) -> dict:
    """Select (or pin) a variant and append the decision as ``decisions/NNNN.json``; old records stay.

    Takes the keyword arguments of `build_decision` (``write_files`` is on: ``report.html`` and
    ``decision.md`` follow the rule's choice, as with ``slimlm report``).

    Returns:
        The record: ``number``, ``created``, the rule (``tier``, ``max_drop``, ``objective``, SLOs), ``selected``,
        ``met``, ``reason``, ``variant`` (id, label, recipe, absolute path, recorded metrics), ``baseline``,
        ``frontier``, ``inputs`` (business assumptions) and ``forecast`` (cost per 1k requests, g CO2e per
        request).

    Example:
        >>> record_decision("runs/quick", tier="high")["number"]
        2
    """
    kwargs.setdefault("write_files", True)
    record = build_decision(run_dir, **kwargs)
    return _write_new(Path(run_dir), record)


def list_decisions(run_dir: str | Path) -> list[dict]:
    """Every recorded decision, oldest first."""
    return [load_decision(run_dir, n) for n in _numbers(Path(run_dir))]


def load_decision(run_dir: str | Path, number: int | None = None) -> dict:
    """Decision ``number`` (the latest when None).

    Raises:
        DecisionError: no such decision (or none recorded when ``number`` is None).
    """
    run_dir = Path(run_dir)
    nums = _numbers(run_dir)
    if number is None:
        if not nums:
            raise DecisionError(f"{run_dir} has no recorded decision; record one with `slimlm decide {run_dir}`.")
        number = nums[-1]
    try:
        return RunDir(run_dir).read_decision(number)
    except RunDirError as exc:
        raise DecisionError(str(exc)) from None


def current_decision(run_dir: str | Path, number: int | None = None) -> dict:
    """Decision ``number``; else the latest recorded; else the rule in ``run.json``, unsaved (number 0)."""
    if number is not None or _numbers(Path(run_dir)):
        return load_decision(run_dir, number)
    return build_decision(run_dir)
