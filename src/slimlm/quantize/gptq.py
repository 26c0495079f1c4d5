"""GPTQ for grouped int4 weights (Frantar et al., 2022), written from the paper.

Columns are quantized one at a time; each column's rounding error is spread over the columns not yet
quantized, weighted by the inverse Hessian of the layer's inputs (``H = 2 X^T X / n``), so the layer's
*output* error is minimised rather than the weight error. With ``act_order`` the columns with the largest
Hessian diagonal go first, and group scales are fixed up front from the original weights ("static groups"),
which keeps groups contiguous in the saved format. Weights that are exactly zero (pruned) stay zero.
"""

from __future__ import annotations

import torch

from slimlm.models.qmath import INT4_MAX, int4_group_params


def _params(w: torch.Tensor, symmetric: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero for one group (out, gs)."""
    s, z = int4_group_params(w, w.shape[1], symmetric)
    return s[:, 0], z[:, 0]


@torch.no_grad()
def gptq_int4(w: torch.Tensor, H: torch.Tensor, group_size: int, damp: float = 0.01,
              act_order: bool = True, symmetric: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize ``w`` (out, in) given its input Hessian ``H`` (in, in); ``symmetric``: llama.cpp's Q4_0 grid
    (`slimlm.models.qmath.int4_group_params`).

    Returns:
        ``(q uint8 (out, in) in [0, 15], scale (out, groups), zero (out, groups))`` in the conventions of
        `slimlm.models.qmath`.
    """
    W = w.detach().float().clone()  # (out, in)
    out_f, in_f = W.shape
    H = H.detach().float().clone()
    zero_mask = W == 0
    has_mask = bool(zero_mask.any())
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    n_groups = in_f // group_size
    scale = torch.empty(out_f, n_groups)
    zero = torch.empty(out_f, n_groups)
    perm = torch.arange(in_f)
    if act_order:
        scale, zero = int4_group_params(W, group_size, symmetric)
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H, zero_mask = W[:, perm], H[perm][:, perm], zero_mask[:, perm]
    H.diagonal().add_(damp * torch.diag(H).mean())
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)  # (in, in)
    Q = torch.zeros(out_f, in_f, dtype=torch.uint8)
    block = group_size * max(1, 128 // group_size)
    for i1 in range(0, in_f, block):
        i2 = min(i1 + block, in_f)
        W1 = W[:, i1:i2].clone()  # (out, b)
        E1 = torch.zeros_like(W1)
        Hi = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if not act_order and col % group_size == 0:  # group params from the updated weights
                g = col // group_size
                scale[:, g], zero[:, g] = _params(W1[:, i : i + group_size], symmetric)
            g = int(perm[col]) // group_size
            s, z = scale[:, g], zero[:, g]
            w_col = W1[:, i]
            q = torch.round(w_col / s + z).clamp(0, INT4_MAX)
            if has_mask:
                q = torch.where(zero_mask[:, col], z, q)
            err = (w_col - (q - z) * s) / Hi[i, i]
            Q[:, col] = q.to(torch.uint8)
            W1[:, i:] -= err[:, None] * Hi[i, i:][None, :]
            E1[:, i] = err
        W[:, i2:] -= E1 @ Hinv[i1:i2, i2:]
    if act_order:
        Q = Q[:, torch.argsort(perm)]
    return Q, scale, zero
