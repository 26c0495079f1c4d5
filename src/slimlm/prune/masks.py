"""Prune masks from scores: per output row at a sparsity, or N:M along the input dimension.

A mask is True where a weight is removed. Ties are broken by index (``topk`` is deterministic on CPU), so
each layer loses exactly ``round(sparsity × numel)`` weights and each group of M exactly M − N.
"""

from __future__ import annotations

import torch


def row_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Remove the lowest scores of every row, ``round(sparsity × numel)`` in all: (out, in) -> bool (out, in).

    Rows lose ``k`` or ``k + 1`` weights (the first rows take the remainder), so the layer's sparsity is
    exact even when ``sparsity × in`` is not a whole number (OWL's per-layer targets).
    """
    rows, cols = score.shape
    total = int(round(sparsity * score.numel()))
    k = torch.full((rows, 1), total // rows, dtype=torch.long)
    k[: total % rows] += 1
    ranks = score.argsort(dim=1, stable=True).argsort(dim=1)  # rank of each weight within its row
    return ranks < k


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the N highest of every M consecutive inputs per row: (out, in) -> bool (out, in); in % M == 0."""
    out, cols = score.shape
    groups = score.reshape(out, cols // m, m)  # (out, in/M, M)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, torch.topk(groups, m - n, dim=2, largest=False).indices, True)
    return mask.reshape(out, cols)


def flat_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """Remove the ``k`` lowest scores of the whole tensor."""
    mask = torch.zeros(score.numel(), dtype=torch.bool)
    if k:
        mask[torch.topk(score.reshape(-1), k, largest=False).indices] = True
    return mask.reshape(score.shape)
