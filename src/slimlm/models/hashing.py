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


def tokenizer_fingerprint(tokenizer) -> str | None:
    """SHA-256 (first 16 hex digits) of how ``tokenizer`` turns text into ids: a fast tokenizer's serialized
    pipeline (normalizer, pre-tokenizer, model, added tokens), else its vocabulary. None without a tokenizer.

    The weights hash does not cover the tokenizer, so a run directory records this beside it: a baseline
    whose tokenizer changed (an edited tokenizer.json, a reader fix) has the same weights and id but scores
    other tokens."""
    if tokenizer is None:
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = backend.to_str()
    else:
        import json

        text = json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
