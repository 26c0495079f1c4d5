"""Multi-fidelity search: a trial's distillation reports its quality as it trains, and a hopeless trial stops.

A distillation stage evaluates the student every ``eval_every`` steps (`slimlm.distill.trainer`). During a
search each of those evaluations becomes an intermediate value of the trial (step → perplexity, or
1 − accuracy for a classifier; lower is better), and Optuna's `MedianPruner` decides whether the trial goes
on: it stops a trial whose best value so far is worse than the median of what completed trials reported at
the same step. A pruned trial raises `optuna.TrialPruned` out of the stage, so the half-trained stage is
never saved to the cache (a later trial that needs it trains it again), and the study records the trial as
PRUNED; it does not count towards the trial budget, which stays exact in COMPLETE trials.

Why not ``trial.report`` / ``trial.should_prune``: Optuna refuses both on multi-objective studies, and a
slimlm study always is one (quality drop plus costs); its TPE sampler also fails on a pruned trial that carries
storage intermediate values in such a study. So the curve is kept in the trial's user attribute ``curve``
(step → value) and Optuna's pruner is asked with a view of the study (`_CurveView`) that is single-objective
and minimising and shows each trial's ``curve`` as its intermediate values. Trade-off: this leans on
`PercentilePruner` (MedianPruner's base) reading only ``study.direction``, ``study.get_trials`` and each
trial's ``intermediate_values`` / ``last_step``, which a test pins.

The search space sets it (``pruner: median`` is the default, ``pruner: none`` turns it off, or a mapping
``{name: median, startup_trials: 2, warmup_steps: 0, min_trials: 2}``). Pruning needs evaluations during
distillation: set ``fixed.distill.eval_every`` in the space (without it nothing is reported or pruned).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slimlm.errors import ConfigError

PRUNERS = ("median", "none")


@dataclass(frozen=True)
class PrunerSettings:
    """Optuna `MedianPruner` settings: prune only once ``startup_trials`` trials are complete, not before
    step ``warmup_steps``, and only when ``min_trials`` completed trials reported a value at that step (2: one
    lucky or unlucky trial alone does not set the bar)."""

    name: str = "median"
    startup_trials: int = 2
    warmup_steps: int = 0
    min_trials: int = 2

    def make(self):
        """The Optuna pruner, or None for ``none``."""
        if self.name == "none":
            return None
        import optuna

        return optuna.pruners.MedianPruner(n_startup_trials=self.startup_trials, n_warmup_steps=self.warmup_steps,
                                           n_min_trials=self.min_trials)


def parse_pruner(value: Any, source: str = "space") -> PrunerSettings:
    """The space's ``pruner`` field: absent (median), ``median``, ``none``, or a mapping with ``name`` and the
    `PrunerSettings` fields.

    Raises:
        ConfigError: an unknown pruner or field, in one sentence naming the space.
    """
    if value is None:
        return PrunerSettings()
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: pruner must be one of {', '.join(PRUNERS)} or a mapping with 'name'.")
    fields = set(PrunerSettings.__dataclass_fields__)
    extra = set(value) - fields
    if extra:
        raise ConfigError(f"{source}: unknown pruner field(s) {sorted(extra)}; use {', '.join(sorted(fields))}.")
    name = str(value.get("name", "median"))
    if name not in PRUNERS:
        raise ConfigError(f"{source}: pruner {name!r} is unknown; use one of {', '.join(PRUNERS)}.")
    ints = {k: value[k] for k in fields - {"name"} if k in value}
    bad = [k for k, v in ints.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0]
    if bad:
        raise ConfigError(f"{source}: pruner {', '.join(sorted(bad))} must be whole numbers ≥ 0.")
    return PrunerSettings(name=name, **ints)


CURVE_ATTR = "curve"
"""The trial user attribute holding a trial's reported curve: ``{"step": value}`` (JSON keys are strings)."""


def _with_curve(t):
    """A copy of frozen trial ``t`` whose intermediate values are its reported curve."""
    import copy

    c = copy.copy(t)
    c.intermediate_values = {int(k): float(v) for k, v in (t.user_attrs.get(CURVE_ATTR) or {}).items()}
    return c


class _CurveView:
    """The study as a single-objective, minimising study whose trials' intermediate values are their curves."""

    def __init__(self, study):
        import optuna

        self._study = study
        self.direction = optuna.study.StudyDirection.MINIMIZE

    def get_trials(self, deepcopy: bool = True, states=None):
        return [_with_curve(t) for t in self._study.get_trials(deepcopy=False, states=states)]


def intermediate_value(entry: dict) -> float | None:
    """One evaluation of the distillation eval curve as a number to minimise (perplexity, else 1 − accuracy)."""
    if entry.get("perplexity") is not None:
        return float(entry["perplexity"])
    if entry.get("accuracy") is not None:
        return 1.0 - float(entry["accuracy"])
    return None


def trial_reporter(study, trial, pruner, log: Callable[[str], None] | None = None) -> Callable[[dict], None]:
    """An ``on_metrics`` callback for a trial's stages: records each evaluation in the trial's ``curve`` and
    raises `optuna.TrialPruned` when ``pruner`` (None: never) says so. The last evaluation of a stage is
    recorded but never prunes: the stage is paid for by then, and keeping it costs only its measurement."""
    import optuna

    curve: dict[str, float] = {}
    total = {"steps": None}

    def on_metrics(m: dict) -> None:
        if "steps" in m:
            total["steps"] = m["steps"]
        entry = m.get("eval")
        if not isinstance(entry, dict):
            return
        val, step = intermediate_value(entry), int(m["step"])
        if val is None:
            return
        curve.setdefault(str(step), val)
        trial.set_user_attr(CURVE_ATTR, dict(curve))
        if pruner is None or (total["steps"] is not None and step >= total["steps"]):
            return
        me = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        if pruner.prune(_CurveView(study), _with_curve(me)):
            msg = f"trial {trial.number} pruned at distillation step {step}: {val:.4g} is worse than the median"
            if log:
                log(msg)
            raise optuna.TrialPruned(msg)

    return on_metrics
