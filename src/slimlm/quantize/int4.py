"""int4 weight-only scheme: asymmetric, grouped, round-to-nearest or GPTQ; packed two per byte
(`slimlm.models.qlayers.Int4WeightLinear`)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from slimlm.models.qlayers import Int4WeightLinear
from slimlm.quantize.base import QuantScheme
from slimlm.quantize.gptq import gptq_int4


class Int4WeightConfig(QuantScheme):
    """Weight-only int4, asymmetric, one scale and zero point per ``group_size`` input columns.

    ``method``: ``rtn`` (round to nearest, no data) or ``gptq`` (second-order error compensation on the
    calibration batch). ``symmetric``: llama.cpp's Q4_0 grid instead (zero point 8, scale = the group's
    signed value of largest magnitude / -8): the variant then exports to GGUF ``q4_0`` with the weights it
    has (exactly, for rtn and QAT), which llama.cpp decodes faster on x86 than ``q4_1``, the asymmetric
    grid's equivalent. ``tied_table``: what a tied model's embedding table becomes when both ends are
    quantized (``skip=()``).
    """

    scheme: Literal["int4-weight"] = "int4-weight"
    group_size: int = Field(32, gt=0)
    method: Literal["rtn", "gptq"] = "gptq"
    damp: float = Field(0.01, gt=0, lt=1, description="GPTQ: Hessian dampening, share of its mean diagonal")
    act_order: bool = Field(True, description="GPTQ: quantize columns in order of decreasing Hessian diagonal")
    symmetric: bool = Field(False, description="llama.cpp's Q4_0 grid (zero point 8); default asymmetric (Q4_1's)")
    tied_table: Literal["int4", "int8"] = Field(
        "int4", description="a tied model with both ends quantized: int4 keeps one matrix (the table looks its rows "
                            "up in the int4 lm_head); int8 gives the table its own int8 copy (one more byte per "
                            "weight, a little closer to fp32)")
    kernel: Literal["dequant", "int4pack"] = Field(
        "dequant", description="dequant: unpack to fp32 (exact reference); int4pack: torch's CPU int4 kernel with "
                               "bf16 activations, faster than fp32 on AVX512 CPUs; same saved weights (a layer "
                               "whose output width is not a multiple of 16 keeps dequant, listed in the report)")

    @field_validator("group_size")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"group_size {v} must be even (two int4 values pack into one byte); try 32 or 64")
        return v

    space: ClassVar[dict[str, Any]] = {"group_size": 32, "int4_kernel": "dequant"}

    def stats_wanted(self) -> dict:
        return {"gram": True} if self.method == "gptq" else {}

    def build_layer(self, name, mod, stats):
        if self.method == "gptq":
            q, s, z = gptq_int4(mod.weight, stats.hessian(name), self.group_size, self.damp, self.act_order,
                                self.symmetric)
            return Int4WeightLinear.from_quantized(q, s, z, self.group_size, mod.bias, self._kernel_for(mod),
                                                   self.symmetric)
        return Int4WeightLinear.from_float(mod, self.group_size, self._kernel_for(mod), self.symmetric)

    def _kernel_for(self, mod) -> str:
        """The configured kernel, or ``dequant`` for a layer ``int4pack`` cannot take (see the report)."""
        if self.kernel == "int4pack" and not Int4WeightLinear.int4pack_fits(mod.out_features):
            return "dequant"
        return self.kernel

    def label(self) -> str:
        base = super().label()
        grid = " q4_0-grid" if self.symmetric else ""
        table = " (int8 table)" if self.tied_table == "int8" and not self.skip else ""
        kernel = " int4pack" if self.kernel == "int4pack" else ""  # the kernel the variant was measured with
        return base.replace(self.scheme, f"{self.scheme} g{self.group_size}{grid} {self.method}{kernel}", 1) + table

    def hardware(self) -> str:
        return "int4 weights: 4x fewer weight bytes; speed needs int4 kernels (GPU; few on CPU)"

    @classmethod
    def from_pick(cls, pick, fixed, before):
        stage = super().from_pick(pick, fixed, before)
        if stage is not None:
            stage["quantize"]["group_size"] = int(pick.get("group_size", 32))
            kernel = pick.get("int4_kernel", "dequant")
            if kernel not in (None, "dequant"):  # the default stays out of the stage, so its cache key is unchanged
                stage["quantize"]["kernel"] = str(kernel)
        return stage
