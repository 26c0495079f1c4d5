"""Hidden-state transfer: match student layer outputs to teacher layer outputs through a layer map.

The map pairs student layer i with teacher layer j (outputs of those blocks). It comes from the pruning
provenance (a layer kept from the teacher maps to itself; see `slimlm.distill.layer_map`) or is given. When
widths differ, a learned linear projection (student width -> teacher width) per mapped pair is trained with
the student and thrown away afterwards; at equal widths no projection is used, so the loss pulls the
student's own residual stream toward the teacher's.

``mse`` is scale-sensitive (residual streams grow with depth, so it is divided by the teacher's mean square
to keep layers comparable); ``cosine`` (1 - cos) ignores scale and is the safer default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from slimlm.distill.losses.kl import masked_mean


def hidden_loss(s: torch.Tensor, t: torch.Tensor, kind: Literal["mse", "cosine"] = "cosine",
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pair loss between (B, T, D) student (already projected) and teacher hidden states."""
    t = t.detach().float()
    s = s.float()
    if kind == "cosine":
        per = 1.0 - F.cosine_similarity(s, t, dim=-1)  # (B, T)
    elif kind == "mse":
        per = (s - t).pow(2).mean(-1) / t.pow(2).mean(-1).clamp_min(1e-6)  # (B, T), relative MSE
    else:
        raise ValueError(f"unknown hidden loss {kind!r}")
    return masked_mean(per, mask)


class HiddenTransfer(nn.Module):
    """Average hidden-state loss over mapped layer pairs, with projections when widths differ.

    Args:
        layer_map: pairs (student layer, teacher layer), 0-based block indices.
        student_width, teacher_width: hidden sizes.
        kind: ``cosine`` or ``mse``.

    ``forward`` takes HF ``hidden_states`` tuples (index 0 is the embedding output, index i+1 the output
    of block i) and returns a scalar.
    """

    def __init__(self, layer_map: Sequence[tuple[int, int]], student_width: int, teacher_width: int,
                 kind: Literal["mse", "cosine"] = "cosine"):
        super().__init__()
        if not layer_map:
            raise ValueError("layer_map is empty")
        self.layer_map = [(int(i), int(j)) for i, j in layer_map]
        self.kind = kind
        self.proj = None
        if student_width != teacher_width:
            self.proj = nn.ModuleList(nn.Linear(student_width, teacher_width, bias=False) for _ in self.layer_map)

    def forward(self, student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                mask: torch.Tensor | None = None) -> torch.Tensor:
        total = 0.0
        for n, (i, j) in enumerate(self.layer_map):
            s = student_hidden[i + 1]  # (B, T, Ds)
            if self.proj is not None:
                s = self.proj[n](s)  # (B, T, Dt)
            total = total + hidden_loss(s, teacher_hidden[j + 1], self.kind, mask)
        return total / len(self.layer_map)
