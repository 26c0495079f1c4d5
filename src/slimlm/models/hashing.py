"""Content hash of a model's weights: the key of the stage cache and of provenance.

The hash covers every tensor in the state dict (name, dtype, shape, bytes), so two models with identical
weights hash the same whether they came from disk or memory. Tensor subclasses (torchao quantized weights)
are hashed through their inner tensors.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def _feed(h, name: str, t: torch.Tensor) -> None:
    if type(t) is not torch.Tensor and type(t) is not nn.Parameter and hasattr(t, "__tensor_flatten__"):
        inner, ctx = t.__tensor_flatten__()
        h.update(f"{name}:{type(t).__name__}:{ctx!r}".encode())
        for attr in inner:
            _feed(h, f"{name}.{attr}", getattr(t, attr))
        return
    t = t.detach().cpu().contiguous()
    h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)


def weights_hash(model: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) over the model's state dict in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        _feed(h, name, t)
    return h.hexdigest()[:16]
