"""Pruning schedules: one shot, or N steps on a cubic sparsity ramp with a hook between steps.

The cubic ramp (Zhu & Gupta 2017) prunes fast while many redundant weights remain and slowly near the
target: s_t = s_final · (1 − (1 − t/N)³) for t = 1..N. Between steps ``between(step, model)`` may train the
model (the distillation stage passes its trainer here) and ``evaluate(model)`` measures it; both are
recorded per step. Re-pruning at a higher sparsity keeps earlier zeros pruned, since every method scores a
zero weight lowest. Iterative schedules apply to unstructured methods without an N:M pattern (a pattern
fixes the sparsity, and structured ratios would have to be re-expressed at every step).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from slimlm.errors import ConfigError
from slimlm.models import Model


class ScheduleConfig(BaseModel):
    """``oneshot``, or ``iterative`` with ``steps`` steps on a cubic ramp."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = 1
    kind: Literal["oneshot", "iterative"] = "oneshot"
    steps: int = Field(1, ge=1)


def cubic_ramp(final: float, steps: int) -> list[float]:
    """Sparsity after each of ``steps`` steps, ending exactly at ``final``."""
    return [final * (1 - (1 - t / steps) ** 3) for t in range(1, steps + 1)]


def run_schedule(model: Model, config, calib=None, schedule: ScheduleConfig | None = None, *,
                 evaluate: Callable[[Model], dict] | None = None,
                 between: Callable[[int, Model], None] | None = None, progress=None) -> list[dict]:
    """Prune ``model`` to ``config`` following ``schedule``; returns one record per step.

    Args:
        model: pruned in place.
        config: the final pruning config (any method for one shot; unstructured without pattern to iterate).
        calib: calibration, as for `prune_`.
        schedule: `ScheduleConfig`; one shot by default.
        evaluate: ``evaluate(model) -> dict`` run after every step (for example a perplexity closure).
        between: ``between(step, model)`` run after every step's pruning, before its evaluation
            (training goes here).
        progress: optional ``progress(desc, done, total)``.

    Returns:
        ``[{"step", "sparsity_target", "sparsity", "seconds", "report", "metrics"?}, ...]`` where
        ``report`` is `prune_`'s full report for that step.
    """
    from slimlm.prune.base import prune_

    schedule = schedule or ScheduleConfig()
    if schedule.kind == "oneshot":
        targets = [None]
    else:
        if not hasattr(config, "sparsity") or getattr(config, "pattern", None):
            raise ConfigError("an iterative schedule needs an unstructured config without --pattern; use kind=oneshot.")
        targets = cubic_ramp(config.sparsity, schedule.steps)
    records = []
    for step, target in enumerate(targets, 1):
        cfg = config if target is None else config.model_copy(update={"sparsity": target})
        start = time.perf_counter()
        report = prune_(model, cfg, calib, progress=progress)
        rec = {"step": step, "sparsity_target": target if target is not None else getattr(config, "sparsity", None),
               "sparsity": report.get("sparsity"), "params_after": report["params_after"],
               "seconds": time.perf_counter() - start, "report": report}
        if between is not None:
            between(step, model)
        if evaluate is not None:
            rec["metrics"] = evaluate(model)
        records.append(rec)
    return records
