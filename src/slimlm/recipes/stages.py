"""Run one recipe stage on a model and save the result: the only place that knows each family's verb.

Each stage kind maps to a runner ``(model, stage, ctx) -> report`` and a saver; a stage works in place on
a model the pipeline owns (never on the parent it may still need) and never touches the parent on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slimlm.data import Corpus
from slimlm.models import Model
from slimlm.recipes.recipe import Stage


@dataclass
class StageContext:
    """What stages may need besides the model: data, the teacher (the run's baseline), progress."""

    corpus: Corpus
    teacher: Model
    progress: Callable | None = None
    checkpoint_dir: Path | None = None


def _calib_tokens(model: Model, stage: Stage, ctx: StageContext):
    from slimlm.data import calibration_batch

    c = stage.calibration
    limit = model.adapter.max_positions
    seq_len = min(c.seq_len, limit) if limit else c.seq_len
    return calibration_batch(model.tokenizer, ctx.corpus, c.samples, seq_len, seed=c.seed)


def _run_prune(model: Model, stage: Stage, ctx: StageContext) -> tuple[dict, dict]:
    from slimlm.prune import make_calibration, prune_, save_kwargs

    c = stage.calibration
    calib = None
    if getattr(stage.config, "needs_calibration", True):
        calib = make_calibration(model, ctx.corpus, n=c.samples, seq_len=c.seq_len, seed=c.seed)
    report = prune_(model, stage.config, calib, progress=ctx.progress)
    return report, save_kwargs(stage.config, report, model)


def _run_distill(model: Model, stage: Stage, ctx: StageContext) -> tuple[dict, dict]:
    from slimlm.distill.trainer import distill_run

    before = model.num_params()
    res = distill_run(model, ctx.teacher, ctx.corpus, stage.config, checkpoint_dir=ctx.checkpoint_dir,
                      resume=ctx.checkpoint_dir is not None, progress=ctx.progress)
    summary = res.summary()
    report = {"params_before": before, "params_after": model.num_params(), **summary}
    kwargs = {"stage": {"kind": "distill", "config": stage.config_dict(),
                        "report": {k: summary[k] for k in ("steps", "tokens", "seconds", "final_losses")}},
              "extra": {"distill": summary}}
    return report, kwargs


def _run_quantize(model: Model, stage: Stage, ctx: StageContext) -> tuple[dict, dict]:
    from slimlm.quantize import quantize_

    needs = stage.config_dict().get("scheme") in ("qat", "int4-weight") or \
        stage.config_dict().get("smoothquant") is not None or stage.config_dict().get("fallback")
    calib = _calib_tokens(model, stage, ctx) if needs else None
    before = model.num_params()
    report = quantize_(model, stage.config, calib, progress=ctx.progress)
    return {"params_before": before, **report}, {"quantize": True, "config": stage.config, "report": report}


RUNNERS: dict[str, Callable[[Model, Stage, StageContext], tuple[dict, dict]]] = {
    "prune": _run_prune,
    "distill": _run_distill,
    "quantize": _run_quantize,
}


def run_stage(model: Model, stage: Stage, ctx: StageContext) -> tuple[dict, dict]:
    """Apply ``stage`` to ``model`` in place; return (report, how to save it)."""
    return RUNNERS[stage.kind](model, stage, ctx)


def save_stage_output(model: Model, out_dir: Path, save_info: dict, metrics: dict | None = None) -> None:
    if save_info.get("quantize"):
        from slimlm.quantize import save as qsave

        qsave(model, out_dir, config=save_info["config"], report=save_info["report"], metrics=metrics)
        return
    from slimlm.models import save

    save(model, out_dir, stage=save_info["stage"], metrics={**save_info.get("metrics", {}), **(metrics or {})},
         extra=save_info.get("extra"))
