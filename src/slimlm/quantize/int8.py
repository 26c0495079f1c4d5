"""int8 schemes: dynamic (int8 activations per token x int8 weights per channel, with optional SmoothQuant)
and weight-only int8. The layers themselves are `slimlm.models.qlayers.Int8DynamicLinear` / `Int8WeightLinear`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from slimlm.models.qlayers import Int8DynamicLinear, Int8WeightLinear
from slimlm.quantize.base import QuantScheme


class Int8DynamicConfig(QuantScheme):
    """int8 activations (per token, symmetric, computed at run time) x int8 weights (per output channel).

    ``smoothquant`` (alpha in [0, 1]) migrates activation outliers into the weights before quantizing.
    """

    scheme: Literal["int8-dynamic"] = "int8-dynamic"
    space: ClassVar[dict[str, Any]] = {**QuantScheme.space, "smoothquant": "none"}
    smoothquant: float | None = Field(None, ge=0, le=1)

    @classmethod
    def from_pick(cls, pick, fixed, before):
        stage = super().from_pick(pick, fixed, before)
        sq = pick.get("smoothquant", "none")
        if stage is not None and sq not in (None, "none"):  # SmoothQuant strength as a search dimension
            stage["quantize"]["smoothquant"] = float(sq)
        return stage

    def stats_wanted(self) -> dict:
        return {"absmax": True} if self.smoothquant is not None else {}

    def build_layer(self, name, mod, stats):
        return Int8DynamicLinear.from_float(mod)

    def label(self) -> str:
        base = super().label()
        return base.replace(self.scheme, f"{self.scheme} sq{self.smoothquant:g}", 1) if self.smoothquant is not None else base

    def hardware(self) -> str:
        return "int8 GEMMs need AVX-512 VNNI/AMX (x86) or i8mm (Arm) for full speed"


class Int8WeightConfig(QuantScheme):
    """Weight-only int8 per output channel; activations stay fp32."""

    scheme: Literal["int8-weight"] = "int8-weight"

    def build_layer(self, name, mod, stats):
        return Int8WeightLinear.from_float(mod)

    def hardware(self) -> str:
        return "weight-only int8 halves weight bytes: helps memory-bound decode, not prefill"
