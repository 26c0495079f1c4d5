"""Defaults that do not wreck a larger model: learning rate and warm-up scaled to the model's size, and a
guard that stops a run whose loss diverges.

The defaults (lr 3e-4, no warm-up) were tuned on SmolLM2-135M. Larger models want smaller steps (the usual
rule is lr ~ 1/sqrt(width) or ~ 1/sqrt(params)); with ``lr_scaling="size"`` the trainer uses
``lr * min(1, sqrt(135M / trained params))`` and at least 5% of the steps (>= 1) of linear warm-up for a
model above 135M, and leaves smaller models exactly as configured. ``lr_scaling="none"`` takes the config
literally. The guard watches the mean training loss over a window of steps: a non-finite loss, or a window
mean above ``factor`` x the lowest window mean seen (or the first step's loss, taken before any update),
stops the run; the trainer then restores the best
evaluated weights, or the weights it started from, and says so in its result. Costs: one copy of the
student's weights in a slimlm temp file while the guard is on (`WeightsOnDisk`; in memory it would be 1.7 GB
more at the peak of a 0.5B student), and nothing per step.
"""

from __future__ import annotations

import math
import shutil

import torch
from torch import nn

from slimlm._io import scratch_dir

REFERENCE_PARAMS = 135_000_000


def scale_for_size(cfg, trained_params: int):
    """The config the trainer runs: ``cfg`` with lr and warm-up scaled for ``trained_params`` (see module)."""
    if getattr(cfg, "lr_scaling", "none") != "size" or trained_params <= REFERENCE_PARAMS:
        return cfg
    factor = math.sqrt(REFERENCE_PARAMS / trained_params)
    warmup = max(cfg.warmup_steps, max(1, cfg.steps // 20)) if cfg.steps > 1 else 0
    return cfg.model_copy(update={"lr": cfg.lr * factor, "warmup_steps": min(warmup, cfg.steps - 1)})


class DivergenceGuard:
    """``update(loss) -> True`` when training has diverged (non-finite, or window mean > factor x best)."""

    def __init__(self, factor: float, window: int = 5):
        self.factor, self.window = factor, window
        self.recent: list[float] = []
        self.best = math.inf
        self.reason: str | None = None

    def update(self, loss: float) -> bool:
        if not self.factor:
            return False
        if not math.isfinite(loss):
            self.reason = f"the loss became {loss}"
            return True
        if not self.recent:  # the first loss is measured before any update: the reference to beat
            self.best = loss
        self.recent = (self.recent + [loss])[-self.window:]
        if len(self.recent) < self.window:
            return False
        mean = sum(self.recent) / self.window
        if mean > self.factor * self.best:
            self.reason = (f"the mean loss of the last {self.window} steps ({mean:.4g}) rose above "
                           f"{self.factor:g} x its lowest ({self.best:.4g})")
            return True
        self.best = min(self.best, mean)
        return False


class WeightsOnDisk:
    """A copy of ``module``'s weights in a temp file of slimlm's cache (``weights-stash``), read back only
    if needed: the weights a diverged run restores, without a second copy of them in memory while it trains.
    `close` removes the file; a killed run's file is swept by the next one."""

    def __init__(self, module: nn.Module):
        self.dir = scratch_dir("weights-stash", "weights")
        self.path = self.dir / "state.pt"
        try:
            torch.save(module.state_dict(), self.path)
        except BaseException:
            self.close()
            raise

    def load(self) -> dict:
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
