"""Hard-label cross-entropy and its mix with a KD term: ``L = alpha * CE + (1 - alpha) * KD``.

``alpha = 1`` is plain fine-tuning on the data (the CE-only baseline), ``alpha = 0`` pure distillation.
The CE term uses the usual causal shift for language models (position t predicts token t+1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_ce(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token cross-entropy: logits (B, T, V) predict input_ids shifted by one; mean over counted targets."""
    pred = logits[:, :-1].float()  # (B, T-1, V)
    target = input_ids[:, 1:]  # (B, T-1)
    per = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none")
    if mask is None:
        return per.mean()
    m = mask[:, 1:].reshape(-1).to(per.dtype)
    return (per * m).sum() / m.sum().clamp_min(1.0)


def class_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on class logits (B, C) against labels (B,)."""
    return F.cross_entropy(logits.float(), labels)


def mix(ce: torch.Tensor | None, kd: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """``alpha * ce + (1 - alpha) * kd``; a term with zero weight may be None (and is not computed)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    total = None
    if alpha > 0:
        total = alpha * ce
    if alpha < 1:
        total = (1.0 - alpha) * kd if total is None else total + (1.0 - alpha) * kd
    return total
