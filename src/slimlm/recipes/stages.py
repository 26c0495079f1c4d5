"""Run one recipe stage on a model: sample calibration when the method asks, then ask the method.

The runner knows no method by name: ``stage.config`` answers ``needs_calibration``, ``apply`` and
``save_output`` (`slimlm.methods`). A stage works in place on a model the pipeline owns (never on the parent
it may still need) and never touches the parent on disk.
"""

from __future__ import annotations

from slimlm.calibration import Calibration, make_calibration
from slimlm.methods import StageContext, StageResult
from slimlm.models import Model
from slimlm.recipes.recipe import Stage


def stage_calibration(model: Model, stage: Stage, ctx: StageContext) -> Calibration | None:
    """The stage's calibration batch (seq_len capped at the model's positions), or None if not needed."""
    if not stage.config.needs_calibration:
        return None
    c = stage.calibration
    limit = model.adapter.max_positions
    seq_len = min(c.seq_len, limit) if limit else c.seq_len
    general = None
    if c.general_data and c.general_share:
        from slimlm.data import load_data

        general = load_data(c.general_data)
    return make_calibration(model, ctx.corpus, n=c.samples, seq_len=seq_len, seed=c.seed, general=general,
                            general_share=c.general_share)


def run_stage(model: Model, stage: Stage, ctx: StageContext) -> StageResult:
    """Apply ``stage`` to ``model`` in place; return its `StageResult` (save it with
    ``stage.config.save_output``)."""
    return stage.config.apply(model, stage_calibration(model, stage, ctx), ctx)
