"""Float weights of a variant, whatever it holds: slimlm's quantized layers are dequantized to fp32.

Exporters write the runtime's own formats (llama.cpp's quant types, ONNX Runtime's and OpenVINO's int8/int4),
so a slimlm-quantized variant is exported from the float weights its int8/int4 grid represents; those values
are exactly what slimlm computes with, so the export's own quantization starts from them.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _dequantized(mod: nn.Module) -> torch.Tensor:
    if hasattr(mod, "dequantized"):
        return mod.dequantized().float()
    return mod.qweight.float() * mod.scale.float().reshape(-1, 1)  # int8 per output channel (or per row)


def float_model(hf: nn.Module) -> nn.Module:
    """``hf`` itself when it has no slimlm quantized layers, else a copy with each one back as fp32."""
    from slimlm.quantize.fallback import set_module
    from slimlm.quantize.modules import Int8Embedding, QuantModule

    quant = [(n, m) for n, m in hf.named_modules() if isinstance(m, QuantModule)]
    if not quant:
        return hf
    new = copy.deepcopy(hf)
    for name, mod in quant:
        w = _dequantized(mod)
        if isinstance(mod, Int8Embedding):
            emb = nn.Embedding(w.shape[0], w.shape[1], padding_idx=mod.padding_idx)
            emb.weight = nn.Parameter(w, requires_grad=False)
            set_module(new, name, emb)
            continue
        lin = nn.Linear(w.shape[1], w.shape[0], bias=mod.bias is not None)
        lin.weight = nn.Parameter(w, requires_grad=False)
        if mod.bias is not None:
            lin.bias = nn.Parameter(mod.bias.float().clone(), requires_grad=False)
        set_module(new, name, lin)
    return new.eval()
