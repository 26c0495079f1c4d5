"""Attention transfer (MiniLM) and relation transfer (similarity-preserving KD).

Attention transfer: KL(teacher attention || student attention) per query row, averaged over heads and
positions. When the student has fewer heads than the teacher (head pruning), the teacher's heads are
averaged in contiguous groups of H_t / H_s so each student head matches one group; attention rows are
already distributions, so a group mean is one too.

Relation transfer: compare the batch's sample-by-sample similarity matrices (Tung & Mori 2019): each
sample is pooled to one vector, G = normalise_rows(F F^T), loss = ||G_s - G_t||_F^2 / B^2. It needs no
projection when widths differ, which makes it a cheap complement to hidden-state transfer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slimlm.distill.losses.kl import masked_mean

_EPS = 1e-8


def group_heads(attn: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, H, T, T) -> (B, heads, T, T) by averaging contiguous groups of H / heads heads."""
    B, H, T, S = attn.shape
    if H == heads:
        return attn
    if H % heads:
        raise ValueError(f"cannot group {H} teacher heads into {heads} student heads")
    return attn.view(B, heads, H // heads, T, S).mean(2)


def attention_kl(student_attn: torch.Tensor, teacher_attn: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL between attention distributions, (B, Hs, T, T) student vs (B, Ht, T, T) teacher; mask (B, T) of queries."""
    t = group_heads(teacher_attn.detach().float(), student_attn.shape[1])
    s = student_attn.float()
    # masked (future / padding) keys have probability 0 in both: 0 * log(0/0) must count as 0
    per = (t * (torch.log(t + _EPS) - torch.log(s + _EPS))).sum(-1)  # (B, H, T)
    per = per.mean(1)  # (B, T)
    return masked_mean(per, mask)


def pool(hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the tokens of each sample: (B, T, D) -> (B, D)."""
    if mask is None:
        return hidden.mean(1)
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def relation_loss(student_feats: torch.Tensor, teacher_feats: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving loss between (B, Ds) and (B, Dt) sample features."""
    def gram(f: torch.Tensor) -> torch.Tensor:
        g = f.float() @ f.float().T  # (B, B)
        return F.normalize(g, p=2, dim=1)

    gs, gt = gram(student_feats), gram(teacher_feats.detach())
    B = gs.shape[0]
    return (gs - gt).pow(2).sum() / (B * B)
