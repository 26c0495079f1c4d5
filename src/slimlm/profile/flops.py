"""Analytic FLOPs and bytes moved, from the modules actually present (so pruned models count less).

Prefill FLOPs for a batch B x S: 2·B·S·(sum of in·out over every Linear used per token: the blocks and the
LM head) + dense attention 4·B·S²·(heads·head_dim) per layer (QKᵀ and AV, without the causal saving, as SDPA
computes it on CPU). Embedding lookups, norms and activations are ignored (<1%). Decode bytes per token are
the weights read per step (every block Linear and the head, at their stored width) plus the KV cache read.
"""

from __future__ import annotations

import torch
from torch import nn

from slimlm.models import Model


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor really occupies, looking through tensor subclasses (packed/quantized weights)."""
    if type(t) not in (torch.Tensor, nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        inner, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, name)) for name in inner)
    return t.numel() * t.element_size()


def _linears(model: Model) -> list[nn.Module]:
    # every matmul module in the blocks: nn.Linear or a quantized replacement (same in/out_features)
    mods = [m for layer in model.adapter.layers() for m in layer.modules()
            if hasattr(m, "in_features") and hasattr(m, "out_features") and hasattr(m, "weight")]
    head = model.adapter.lm_head() if model.task == "causal-lm" else None
    if head is not None:
        mods.append(head)
    return mods


def _weight(m: nn.Module) -> torch.Tensor:
    w = m.weight
    return w() if callable(w) and not isinstance(w, torch.Tensor) else w  # torch.ao dynamic Linear: a method


def _in_out(m: nn.Module) -> tuple[int, int]:
    if hasattr(m, "in_features"):
        return m.in_features, m.out_features
    w = _weight(m)
    return w.shape[1], w.shape[0]


def prefill_flops(model: Model, batch: int, seq: int) -> int:
    a = model.adapter
    linear = sum(i * o for i, o in map(_in_out, _linears(model)))
    attn = 4 * seq * seq * a.num_heads * a.head_dim * a.num_layers
    return 2 * batch * seq * linear + batch * attn


def decode_bytes_per_token(model: Model, context: int) -> int:
    a = model.adapter
    weights = sum(tensor_bytes(_weight(m)) for m in _linears(model))
    kv = 2 * a.num_layers * a.num_kv_heads * a.head_dim * context * 4  # fp32 cache, K and V
    return weights + kv
