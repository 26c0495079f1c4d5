"""Top-k logits distillation: the teacher keeps only its k largest logits per position.

Storing k logits and their ids instead of the full vocabulary (49,152 for SmolLM2) makes caching the
teacher's outputs on disk cheap (k=64: 0.13% of the floats), so the teacher runs once per data set and not
once per experiment. The trade-off: the teacher distribution is renormalised over its top k tokens, so the
tail mass (usually small at T=1) is dropped. With k = V this is exactly forward KL.

The student's log-probabilities stay normalised over the full vocabulary, so pushing mass outside the
teacher's top k is still penalised through the softmax denominator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slimlm.distill.losses.kl import masked_mean


def teacher_topk(teacher_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices), each (..., k), of the teacher's top-k logits."""
    values, indices = teacher_logits.detach().float().topk(k, dim=-1)
    return values, indices


def topk_kd_loss(
    student_logits: torch.Tensor,
    topk_values: torch.Tensor,
    topk_indices: torch.Tensor,
    *,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Forward KL from the teacher's renormalised top-k distribution to the student, T^2-scaled.

    Args:
        student_logits: (..., V).
        topk_values: (..., k) teacher logits (any float dtype; computed in fp32).
        topk_indices: (..., k) vocabulary ids of those logits.
        temperature: T > 0.
        mask: optional (...) positions that count.
    """
    T = float(temperature)
    return masked_mean(topk_per_position(student_logits, topk_values, topk_indices, T), mask) * (T * T)


def topk_per_position(student_logits: torch.Tensor, topk_values: torch.Tensor, topk_indices: torch.Tensor,
                      T: float) -> torch.Tensor:
    """KL(renormalised teacher top-k || student) per position, not yet T^2-scaled: (..., V) -> (...)."""
    t_log = F.log_softmax(topk_values.float() / T, dim=-1)  # (..., k), renormalised over the top k
    s_log = F.log_softmax(student_logits.float() / T, dim=-1).gather(-1, topk_indices.long())  # (..., k)
    return (t_log.exp() * (t_log - s_log)).sum(-1)
