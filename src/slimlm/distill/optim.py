"""The optimizer the trainers use: AdamW, fused where PyTorch has a fused kernel for the parameters' device.

PyTorch's default AdamW (``foreach``) computes each update through lists of temporaries as large as the
trained weights: on a 0.5B student that is gigabytes on top of the weights, gradients and moments, at the
moment of the step, which is where a distillation's memory peaks once its loss no longer holds whole-vocabulary
logits. The fused kernel updates each weight in place with no such temporaries (and on this project's 2-core
CPU ran a step about 4x faster). The update is AdamW's either way, up to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

#: devices with a fused AdamW kernel in the pinned PyTorch
FUSED_DEVICES = ("cpu", "cuda")


def adamw(params: Iterable, **kwargs) -> torch.optim.AdamW:
    """``torch.optim.AdamW(params, **kwargs)``, fused when every parameter is a floating tensor on a device
    with a fused kernel (else PyTorch's default implementation)."""
    params = list(params)
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(tensors) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in tensors)
    return torch.optim.AdamW(params, fused=fused or None, **kwargs)
