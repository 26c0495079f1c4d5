"""Distillation: losses (one module each), the trainer (teacher frozen, checkpoints, resume, data parallel)
and schedules (iterative prune-distill, progressive)."""

from slimlm.distill.config import DistillConfig
from slimlm.distill.trainer import DistillResult, distill, distill_run, lr_factor
from slimlm.methods import register

register(DistillConfig)

__all__ = ["DistillConfig", "DistillResult", "distill", "distill_run", "lr_factor"]

from slimlm._verbs import make_callable  # noqa: E402

make_callable(__name__, "slimlm.distill:distill")  # `slimlm.distill(...)` calls the public verb
