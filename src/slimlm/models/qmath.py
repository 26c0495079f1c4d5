"""Quantization arithmetic: scales, zero points, rounding, int4 packing, and fake quantization for QAT.

Conventions (shared by PTQ, GPTQ, QAT and the saved format, so that they agree bit for bit):
  int8:  symmetric, ``w = q * scale``, ``q`` in [-127, 127], one fp32 scale per output channel (or token).
  int4:  asymmetric per group of input columns, ``w = (q - zero) * scale``, ``q`` and ``zero`` in [0, 15],
         scales rounded to bf16 (stored as bf16). The range always includes 0, so a pruned weight (0.0)
         quantizes to exactly ``zero`` and dequantizes to exactly 0.0: sparsity survives quantization.
"""

from __future__ import annotations

import torch

INT8_MAX = 127
INT4_MAX = 15


def int8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row of ``w`` (out, in): returns ``(q int8 (out, in), scale fp32 (out,))``."""
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / INT8_MAX  # (out,)
    q = torch.round(w / scale[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale.float()


def int4_group_params(w: torch.Tensor, group_size: int, symmetric: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """int4 scale (bf16-exact fp32) and integer zero point per group: each (out, in // group).

    Asymmetric (default): the group's [min, max] (widened to include 0) spans the 16 levels. ``symmetric``:
    llama.cpp's Q4_0 grid: scale = (the group's value of largest magnitude, with its sign) / -8 and zero point
    8, so that value lands exactly on level 0 and a Q4_0 quantizer given the dequantized weights finds the same
    scale again (the export then reproduces them exactly; the scale may be negative).
    """
    out_f, in_f = w.shape
    g = w.reshape(out_f, in_f // group_size, group_size)
    if symmetric:
        peak = g.gather(-1, g.abs().argmax(-1, keepdim=True)).squeeze(-1)
        scale = (peak / -8).to(torch.bfloat16).float()
        scale = torch.where(scale.abs() < 1e-8, torch.full_like(scale, 1e-8), scale)  # an all-zero group
        return scale, torch.full_like(scale, 8.0)
    lo = g.amin(-1).clamp(max=0)
    hi = g.amax(-1).clamp(min=0)
    scale = ((hi - lo) / INT4_MAX).clamp(min=1e-8).to(torch.bfloat16).float()
    zero = torch.round(-lo / scale).clamp(0, INT4_MAX)
    return scale, zero


def int4_quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> torch.Tensor:
    """Round ``w`` (out, in) onto the given group grid: ``q`` (out, in) as uint8 in [0, 15]."""
    s = scale.repeat_interleave(group_size, dim=1)
    z = zero.repeat_interleave(group_size, dim=1)
    return torch.round(w / s + z).clamp(0, INT4_MAX).to(torch.uint8)


def int4_dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> torch.Tensor:
    out_f, in_f = q.shape
    g = q.reshape(out_f, in_f // group_size, group_size).float()
    return ((g - zero.float()[..., None]) * scale.float()[..., None]).reshape(out_f, in_f)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Two int4 values per byte along the input dimension: (out, in) uint8 -> (out, in // 2), low nibble first."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_int4(p: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_int4`: (out, in // 2) uint8 -> (out, in) uint8."""
    lo = p & 0x0F
    hi = p >> 4
    return torch.stack([lo, hi], dim=-1).reshape(p.shape[0], p.shape[1] * 2)


def fake_int8_per_channel(w: torch.Tensor) -> torch.Tensor:
    """Quantize-dequantize ``w`` with a straight-through gradient (QAT)."""
    scale = w.detach().abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / INT8_MAX
    wq = torch.round(w / scale).clamp(-INT8_MAX, INT8_MAX) * scale
    return w + (wq - w).detach()


def fake_int8_per_token(x: torch.Tensor) -> torch.Tensor:
    scale = x.detach().abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / INT8_MAX
    xq = torch.round(x / scale).clamp(-INT8_MAX, INT8_MAX) * scale
    return x + (xq - x).detach()


def fake_int4_group(w: torch.Tensor, group_size: int, symmetric: bool = False) -> torch.Tensor:
    scale, zero = int4_group_params(w.detach(), group_size, symmetric)
    wq = int4_dequantize(int4_quantize(w.detach(), scale, zero, group_size), scale, zero, group_size)
    return w + (wq - w).detach()


def sqnr(ref: torch.Tensor, x: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: ``10 log10(|ref|^2 / |ref - x|^2)``."""
    noise = (ref.float() - x.float()).pow(2).sum().clamp(min=1e-30)
    return float(10 * torch.log10(ref.float().pow(2).sum() / noise))
