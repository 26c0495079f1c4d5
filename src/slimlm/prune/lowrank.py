"""Low-rank factorisation of the blocks' Linear layers by truncated SVD: ``W ≈ B·A`` with rank ``r``.

A Linear ``(out, in)`` becomes two, ``in → r`` then ``r → out``, which is smaller and cheaper whenever
``r·(in + out) < in·out``; layers where the rank kept would not save anything are left alone. Each factor
takes the square root of the singular values (``A = √S·Vᵀ``, ``B = U·√S``), so both are on the same scale
and stay trainable: distillation after this stage recovers what truncation lost, and quantization after it
quantizes the two factors like any Linear.

Trade-off: plain SVD of the weights ignores which input directions the data actually uses (activation-aware
variants such as ASVD and SVD-LLM weight it by calibration statistics); it is data-free and takes seconds,
and on a trained LLM it loses far more quality per parameter saved than structured pruning does (see the
pruning benchmark), so it is a building block for prune → distill recipes rather than a one-shot method.
The saved variant records each factorised layer, and `slimlm.models.load` rebuilds it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from slimlm.models.qlayers import QuantModule, set_module
from slimlm.prune.base import PruneMethod


class LowRankLinear(QuantModule):
    """``x ↦ up(down(x))``: a rank-``r`` replacement for an ``nn.Linear`` (its parameters are trainable)."""

    kind = "lowrank"
    structural = True

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool):
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, lin: nn.Linear, rank: int) -> LowRankLinear:
        w = lin.weight.detach().float()  # (out, in)
        u, s, vh = torch.linalg.svd(w, full_matrices=False)  # (out, k), (k,), (k, in)
        root = s[:rank].sqrt()
        m = cls(lin.in_features, lin.out_features, rank, lin.bias is not None)
        m.down.weight.copy_(root[:, None] * vh[:rank])  # (r, in)
        m.up.weight.copy_(u[:, :rank] * root[None, :])  # (out, r)
        if lin.bias is not None:
            m.up.bias.copy_(lin.bias.detach())
        return m.to(lin.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def meta(self) -> dict:
        return {"kind": self.kind, "impl": f"{__name__}:LowRankLinear", "in": self.down.in_features,
                "out": self.up.out_features, "rank": self.down.out_features, "bias": self.up.bias is not None}

    def logical_params(self) -> int:
        return 0  # its two Linears are ordinary parameters, counted as such

    def nonzero_params(self) -> int:
        return 0

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict) -> LowRankLinear:
        m = cls(meta["in"], meta["out"], meta["rank"], meta["bias"])
        own = {k: v for k, v in tensors.items() if k in dict(m.named_parameters())}
        m.load_state_dict(own, strict=False)  # a factor quantized later is restored after this module
        return m


def _targets(model, parts: tuple[str, ...]) -> dict[str, nn.Linear]:
    ad = model.adapter
    out: dict[str, nn.Linear] = {}
    names = {id(m): n for n, m in model.hf.named_modules()}
    for layer in ad.layers():
        mods = []
        if "attention" in parts:
            a = ad.attention(layer)
            mods += [a.q, a.k, a.v, a.o]
        if "mlp" in parts:
            m = ad.mlp(layer)
            mods += [x for x in (m.gate, m.up, m.down) if x is not None]
        out.update({names[id(x)]: x for x in mods if isinstance(x, nn.Linear)})
    return out


def rank_for(lin: nn.Linear, keep: float, multiple: int) -> int | None:
    """The rank that keeps ``keep`` of the layer's full rank (rounded to ``multiple``), or None when the
    factorised pair would not be smaller than the layer."""
    full = min(lin.in_features, lin.out_features)
    r = max(multiple, int(round(full * keep / multiple)) * multiple)
    if r * (lin.in_features + lin.out_features) >= lin.in_features * lin.out_features:
        return None
    return r


class LowRankConfig(PruneMethod):
    """Truncated-SVD factorisation: ``rank`` is the share of each layer's full rank kept (0.25 keeps a
    quarter); ``parts`` picks the MLP and/or attention projections; ranks round to ``multiple``."""

    method: Literal["lowrank"] = "lowrank"
    rank: float = Field(0.5, gt=0, lt=1)
    parts: tuple[Literal["mlp", "attention"], ...] = ("mlp",)
    multiple: int = Field(8, ge=1)
    space: ClassVar[dict[str, Any]] = {"lowrank": 0.0}

    @property
    def needs_calibration(self) -> bool:
        return False

    def label(self) -> str:
        return f"lowrank {self.rank:g} {'+'.join(self.parts)}"

    def hardware(self) -> str:
        return "two thinner dense matmuls per layer: faster on any hardware when the rank is low enough"

    @classmethod
    def from_pick(cls, pick, fixed, before):
        if not pick.get("lowrank") or any(s.get("prune") for s in before):
            return None
        return {"prune": {"method": "lowrank", "rank": float(pick["lowrank"])}}

    def prune(self, model, calib, progress) -> dict:
        targets = _targets(model, self.parts)
        done: dict[str, int] = {}
        for i, (name, lin) in enumerate(targets.items()):
            r = rank_for(lin, self.rank, self.multiple)
            if r is not None:
                set_module(model.hf, name, LowRankLinear.from_linear(lin, r))
                done[name] = r
            if progress:
                progress("lowrank", i + 1, len(targets))
        model.rehash()
        return {"method": "lowrank", "factorised": len(done), "skipped": len(targets) - len(done),
                "ranks": sorted(set(done.values()))}
