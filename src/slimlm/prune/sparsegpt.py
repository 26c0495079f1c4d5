"""SparseGPT (Frantar & Alistarh 2023): prune a Linear and fix up the surviving weights with the inverse Hessian.

For a layer with calibration inputs X (tokens, in), H = 2 XᵀX / n. Columns are visited left to right in
blocks of ``blocksize``; within a block the mask is chosen by the OBS saliency w² / [H⁻¹]²_jj, each pruned
weight's error is spread over the not-yet-visited columns of its row through the upper Cholesky factor of
H⁻¹, and the block's accumulated error is applied to the remaining columns in one matmul (the lazy batched
update). Unstructured masks are chosen over the whole block (so per-row sparsity varies while the layer's
total is exact); N:M masks are chosen per row every M columns.
"""

from __future__ import annotations

import torch

from slimlm.prune.masks import flat_mask


def _inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + λI)⁻¹, raising the damping until H is positive definite."""
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    lam = damp * torch.diag(h).mean()
    for _ in range(6):
        chol, info = torch.linalg.cholesky_ex(h + lam * eye)
        if int(info) == 0:
            hinv = torch.cholesky_inverse(chol)
            upper, info = torch.linalg.cholesky_ex(hinv, upper=True)
            if int(info) == 0:
                return upper
        lam = lam * 10
    raise RuntimeError("the calibration Hessian is not positive definite even with heavy damping")


@torch.no_grad()
def sparsegpt_(weight: torch.Tensor, hessian: torch.Tensor, tokens: int, *, sparsity: float,
               nm: tuple[int, int] | None = None, blocksize: int = 128, damp: float = 0.01) -> torch.Tensor:
    """Prune ``weight`` (out, in) in place from ``hessian`` = Σ xᵀx over ``tokens`` inputs; returns the mask."""
    w = weight.detach().float().clone()  # (out, in)
    rows, cols = w.shape
    h = hessian.double() * (2.0 / max(tokens, 1))
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    hinv = _inverse_cholesky(h, damp).float()  # (in, in), upper triangular
    mask = torch.zeros_like(w, dtype=torch.bool)
    total_k = int(round(sparsity * w.numel()))
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        d = torch.diag(hinv1)  # (count,)
        if nm is None:  # exact per-layer total: this block gets its share of round(sparsity × numel)
            k = int(round(total_k * i2 / cols)) - int(round(total_k * i1 / cols))
            mask1 = flat_mask(w1.pow(2) / d[None, :].pow(2), k)
        else:
            mask1 = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(count):
            col = w1[:, i]
            if nm is not None and i % nm[1] == 0:
                n, m = nm
                score = w1[:, i : i + m].pow(2) / d[None, i : i + m].pow(2)  # (out, m)
                idx = torch.topk(score, m - n, dim=1, largest=False).indices
                mask1.scatter_(1, i + idx, True)
            q = col.clone()
            q[mask1[:, i]] = 0
            q1[:, i] = q
            e = (col - q) / hinv1[i, i]  # (out,)
            w1[:, i:] -= e[:, None] @ hinv1[i, i:][None, :]
            err1[:, i] = e
        w[:, i1:i2] = q1
        mask[:, i1:i2] = mask1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    weight.copy_(w.to(weight.dtype))
    return mask
