"""Per-weight scores for unstructured pruning, and OWL's outlier-weighted layer-wise allocation."""

from __future__ import annotations

import torch


def magnitude(weight: torch.Tensor) -> torch.Tensor:
    """|W|: (out, in) -> (out, in)."""
    return weight.detach().abs().float()


def wanda(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """|W_ij| · ‖X_j‖₂ over calibration tokens (Sun et al. 2023): (out, in), (in,) -> (out, in)."""
    return weight.detach().abs().float() * input_norm.float()[None, :]


def outlier_ratio(scores: list[torch.Tensor], threshold: float) -> float:
    """Share of a layer's scores above ``threshold`` × their mean (OWL's layer-wise outlier distribution)."""
    flat = torch.cat([s.reshape(-1) for s in scores])
    return (flat > threshold * flat.mean()).float().mean().item()


def owl_allocation(ratios: list[float], sparsity: float, lam: float) -> list[float]:
    """Per-layer sparsities in ``[sparsity - lam, sparsity + lam]`` with mean ``sparsity``.

    Layers with more outliers get lower sparsity (Yin et al. 2023, "Outlier Weighed Layerwise sparsity").
    With equal-sized layers the global sparsity stays ``sparsity``.
    """
    r = torch.tensor(ratios, dtype=torch.float64)
    span = (r.max() - r.min()).item()
    if span == 0:
        return [sparsity] * len(ratios)
    density = (r - r.min()) / span * (2 * lam)  # in [0, 2 lam]
    density = density - density.mean() + (1 - sparsity)
    return [float(min(max(1 - d, 0.0), 0.999)) for d in density]
