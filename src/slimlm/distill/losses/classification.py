"""KD on class logits for encoders with a classification head.

``L = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(p_t || p_s)`` on (B, C) logits. With few
classes a temperature above 1 matters more than for language models: the teacher's "dark knowledge" (how
wrong the wrong classes are) is otherwise squashed to near-zero probabilities.
"""

from __future__ import annotations

import torch

from slimlm.distill.losses.ce import class_ce, mix
from slimlm.distill.losses.kl import kd_loss


def class_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None,
                  *, temperature: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    """Mixed CE + soft-target KD on class logits; ``labels`` may be None only when ``alpha == 0``."""
    kd = kd_loss(student_logits, teacher_logits, temperature=temperature) if alpha < 1 else None
    ce = class_ce(student_logits, labels) if alpha > 0 else None
    return mix(ce, kd, alpha)
