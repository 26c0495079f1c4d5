"""SmoothQuant (Xiao et al., 2023): move activation outliers into the weights before int8 quantization.

For each producer -> consumers pair from the adapter (a norm feeding q/k/v, up feeding down, ...), input
channel ``j`` gets ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``; the producer's output channel is divided
by ``s_j`` and the consumers' column ``j`` multiplied by it. The fp32 function is unchanged (up to rounding);
per-token activation scales then waste less range on a few outlier channels. Pruned zeros stay zero.
"""

from __future__ import annotations

import torch
from torch import nn

from slimlm.models.adapters import FamilyAdapter


@torch.no_grad()
def smooth_(adapter: FamilyAdapter, act_absmax: dict[int, torch.Tensor], alpha: float,
            only: set[int] | None = None) -> int:
    """Apply SmoothQuant in place. ``act_absmax`` maps ``id(consumer)`` to its input's per-channel max |x|.

    Pairs whose consumers are not all in ``only`` (ids of the Linears being quantized) are left alone.
    Returns the number of pairs smoothed.
    """
    done = 0
    for layer in adapter.layers():
        for producer, consumers in adapter.smoothing_pairs(layer):
            if only is not None and not all(id(c) in only for c in consumers):
                continue
            x_max = act_absmax.get(id(consumers[0]))
            if x_max is None:
                continue
            w_max = torch.stack([c.weight.abs().amax(0) for c in consumers]).amax(0)  # (in,)
            s = (x_max.clamp(min=1e-5).pow(alpha) / w_max.clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5)
            _scale_out_(producer, 1.0 / s, adapter.norm_offset)
            for c in consumers:
                c.weight.mul_(s[None, :].to(c.weight.dtype))
            done += 1
    return done


def _scale_out_(producer: nn.Module, f: torch.Tensor, norm_offset: float = 0.0) -> None:
    if isinstance(producer, nn.Linear):
        producer.weight.mul_(f[:, None].to(producer.weight.dtype))
        if producer.bias is not None:
            producer.bias.mul_(f.to(producer.bias.dtype))
    else:  # a norm: y = (offset + weight) * normalized(x) (+ bias); Gemma's offset is 1
        w = producer.weight
        w.copy_(((norm_offset + w.float()) * f - norm_offset).to(w.dtype))
        if getattr(producer, "bias", None) is not None:
            producer.bias.mul_(f.to(producer.bias.dtype))
