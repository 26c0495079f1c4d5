"""Prune-distill cycles and progressive distillation.

Iterative (``--schedule iterative:steps=N``): the pruning target is reached in N steps on the pruning
issue's cubic ramp (`slimlm.prune.schedule.cubic_ramp`: large cuts first, small ones near the target),
and after every cut the student is distilled from the (unpruned) teacher for its share of the step
budget. The student never has to jump from the teacher to the final shape at once, at the price of pruning
(and calibrating) N times. Structured targets are re-expressed per step: ``layers=L`` drops
round(L*r_t) - (already dropped) blocks, ``ffn=f`` keeps (1 - f*r_t) of the original channels, where r_t is
the ramp's fraction at step t. Unstructured configs go through `slimlm.prune.run_schedule` directly.

Progressive (`progressive`): teacher -> intermediate student -> final student, each stage distilled from
the previous one. Useful when the final student is far smaller than the teacher (the capacity gap makes
a direct teacher a worse target, Mirzadeh et al. 2020); every stage costs a full distillation run.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from slimlm.data import Corpus
from slimlm.distill.config import DistillConfig
from slimlm.distill.trainer import DistillResult, distill_run
from slimlm.errors import ConfigError
from slimlm.models import Model


class IterativeSchedule(BaseModel):
    """``iterative:steps=N``: N prune steps on a cubic ramp, each followed by a distillation phase."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str = Field("iterative", pattern="^iterative$")
    version: int = 1
    steps: int = Field(3, ge=1)


def parse_schedule(spec: str | None) -> IterativeSchedule | None:
    """``None``/``oneshot`` -> None; ``iterative`` or ``iterative:steps=3`` -> `IterativeSchedule`."""
    if not spec or spec == "oneshot":
        return None
    kind, _, rest = spec.partition(":")
    if kind != "iterative":
        raise ConfigError(f"--schedule {spec!r} is unknown; use oneshot or iterative:steps=N.")
    fields = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key != "steps" or not value.isdigit() or int(value) < 1:
            raise ConfigError(f"--schedule item {item!r} is invalid; use iterative:steps=N with N >= 1.")
        fields["steps"] = int(value)
    return IterativeSchedule(**fields)


def split_steps(total: int, parts: int) -> list[int]:
    """Split a step budget into ``parts`` near-equal phases (earlier phases get the remainder)."""
    if total < parts:
        raise ConfigError(f"--steps {total} is fewer than the {parts} distillation phases; give at least {parts}.")
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def structured_steps(cfg, n_layers: int, steps: int) -> list:
    """Per-step `StructuredConfig`s whose composition reaches ``cfg`` on the cubic ramp."""
    from slimlm.prune.schedule import cubic_ramp

    unsupported = [k for k in ("heads", "hidden", "vocab") if getattr(cfg, k)]
    if unsupported:
        raise ConfigError(f"the iterative schedule re-expresses layers and ffn only; prune {', '.join(unsupported)} "
                          "in a separate one-shot stage.")
    total_layers = 0
    if cfg.layers:
        total_layers = int(cfg.layers) if cfg.layers >= 1 else int(round(cfg.layers * n_layers))
    ramp = cubic_ramp(1.0, steps)
    out, dropped, kept_ffn = [], 0, 1.0
    for r in ramp:
        fields: dict = {}
        n_drop = int(round(total_layers * r)) - dropped
        if n_drop > 0:
            fields["layers"] = n_drop
            dropped += n_drop
        if cfg.ffn:
            target_keep = 1.0 - cfg.ffn * r
            frac = 1.0 - target_keep / kept_ffn  # of the channels present now
            if frac > 1e-6:
                fields["ffn"] = frac
                kept_ffn = target_keep
        out.append(cfg.model_copy(update={"layers": fields.get("layers"), "ffn": fields.get("ffn")})
                   if fields else None)
    return out


def prune_distill(
    student: Model,
    teacher: Model,
    corpus: Corpus,
    prune_cfg,
    distill_cfg: DistillConfig,
    schedule: IterativeSchedule,
    *,
    calib_samples: int = 32,
    calib_seq_len: int = 256,
    progress=None,
    on_metrics: Callable[[dict], None] | None = None,
    eval_corpus: Corpus | None = None,
) -> tuple[Model, list[dict]]:
    """Alternate pruning steps and distillation phases until ``prune_cfg`` is reached.

    ``student`` starts as a copy of the teacher (or an already smaller model) and is pruned in place;
    ``distill_cfg.steps`` is the total distillation budget, split evenly over the phases.

    Returns:
        ``(student, records)`` with one record per cycle: ``{"cycle", "prune", "params_after", "distill"}``.
    """
    from slimlm.prune import StructuredConfig, make_calibration, prune_

    phases = split_steps(distill_cfg.steps, schedule.steps)
    if isinstance(prune_cfg, StructuredConfig):
        per_step = structured_steps(prune_cfg, student.adapter.num_layers, schedule.steps)
    else:
        from slimlm.prune.schedule import cubic_ramp

        if getattr(prune_cfg, "pattern", None):
            raise ConfigError("an N:M pattern cannot be ramped; use a one-shot prune before distilling.")
        per_step = [prune_cfg.model_copy(update={"sparsity": s}) for s in cubic_ramp(prune_cfg.sparsity, schedule.steps)]
    records = []
    tokens_before = steps_before = 0
    for cycle, (pcfg, n_steps) in enumerate(zip(per_step, phases, strict=True), 1):
        rec: dict = {"cycle": cycle}
        if pcfg is not None:
            calib = make_calibration(student, corpus, n=calib_samples, seq_len=calib_seq_len, seed=cycle)
            report = prune_(student, pcfg, calib, progress=progress)
            student.provenance.setdefault("stages", []).append(
                {"kind": "prune", "config": pcfg.model_dump(mode="json"), "report": _layers_only(report)})
            rec["prune"] = pcfg.model_dump(mode="json", exclude_none=True)
            rec["prune_seconds"] = report["seconds"]
        rec["params_after"] = student.num_params()
        phase_cfg = distill_cfg.model_copy(update={"steps": n_steps,
                                                   "warmup_steps": min(distill_cfg.warmup_steps, n_steps - 1)})

        def tag(m, cycle=cycle, base=tokens_before, done=steps_before):
            if on_metrics:  # steps and tokens counted over the whole schedule, not per phase
                m = dict(m, cycle=cycle, step=m["step"] + done)
                if "steps" in m:
                    m["steps"] = distill_cfg.steps
                if "eval" in m:
                    m["eval"] = dict(m["eval"], step=m["eval"]["step"] + done, tokens=m["eval"]["tokens"] + base)
                on_metrics(m)

        res: DistillResult = distill_run(student, teacher, corpus, phase_cfg, progress=progress, on_metrics=tag,
                                         eval_corpus=eval_corpus)
        tokens_before += res.tokens
        steps_before += res.steps
        rec["distill"] = res.summary()
        records.append(rec)
    return student, records


def _layers_only(report: dict) -> dict:
    """The parts of a pruning report that provenance needs (which layers survived), not the raw scores."""
    out = {"shape_before": report.get("shape_before"), "shape_after": report.get("shape_after")}
    if "layers" in report:
        out["layers"] = {"removed": report["layers"]["removed"]}
    return out


def progressive(
    teacher: Model,
    students: list[Model],
    corpus: Corpus,
    cfgs: DistillConfig | list[DistillConfig],
    **kwargs,
) -> list[DistillResult]:
    """Distil ``teacher`` -> ``students[0]`` -> ``students[1]`` -> ...; each trained student teaches the next.

    Example:
        >>> progressive(teacher, [intermediate, final], corpus, DistillConfig(steps=200))  # doctest: +SKIP
    """
    cfgs = cfgs if isinstance(cfgs, list) else [cfgs] * len(students)
    if len(cfgs) != len(students):
        raise ConfigError("give one distillation config per student, or one for all.")
    results, current = [], teacher
    for student, cfg in zip(students, cfgs, strict=True):
        results.append(distill_run(student, current, corpus, cfg, **kwargs))
        current = student
    return results
