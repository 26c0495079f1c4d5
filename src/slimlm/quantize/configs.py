"""Quantization configs: small frozen pydantic models, one per scheme, with a literal ``scheme`` discriminator.

Each config validates what it can on its own (ranges, names); what depends on the model (a group size must
divide every quantized layer's input width) is checked by its handler before any heavy work, and fails with
the valid values listed. ``version`` lets a recipe written today be read by a later slimlm.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SKIPPABLE = ("lm_head", "embed")


class FallbackConfig(BaseModel):
    """Per-layer fallback: keep the most sensitive layers in fp32 until a quality tolerance holds.

    ``tolerance`` is the allowed relative perplexity increase on held-out calibration windows (0.01 = 1%).
    Sensitivity is the KL divergence from the fp32 model when only that layer is quantized.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = 1
    tolerance: float = Field(0.01, gt=0, le=10)
    max_layers: int | None = Field(None, ge=0, description="at most this many layers stay in fp32")
    holdout: int = Field(4, ge=1, description="calibration rows held out to check the tolerance")


class _Scheme(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = 1
    skip: tuple[str, ...] = Field(SKIPPABLE, description="parts kept in fp32: lm_head, embed (empty: quantize all)")
    exclude: tuple[str, ...] = Field((), description="extra module names (or name suffixes) kept in fp32")
    fallback: FallbackConfig | None = None

    @field_validator("skip", mode="before")
    @classmethod
    def _parse_skip(cls, v):
        if isinstance(v, str):
            v = [p.strip() for p in v.split(",") if p.strip() and p.strip() != "none"]
        v = tuple(v)
        bad = [p for p in v if p not in SKIPPABLE]
        if bad:
            raise ValueError(f"unknown part(s) {bad}; skip takes a subset of {list(SKIPPABLE)} (or none)")
        return v


class Int8DynamicConfig(_Scheme):
    """int8 activations (per token, symmetric, computed at run time) x int8 weights (per output channel).

    ``smoothquant`` (alpha in [0, 1]) migrates activation outliers into the weights before quantizing.
    """

    scheme: Literal["int8-dynamic"] = "int8-dynamic"
    smoothquant: float | None = Field(None, ge=0, le=1)


class Int8WeightConfig(_Scheme):
    """Weight-only int8 per output channel; activations stay fp32."""

    scheme: Literal["int8-weight"] = "int8-weight"


class Int4WeightConfig(_Scheme):
    """Weight-only int4, asymmetric, one scale and zero point per ``group_size`` input columns.

    ``method``: ``rtn`` (round to nearest, no data) or ``gptq`` (second-order error compensation on the
    calibration batch).
    """

    scheme: Literal["int4-weight"] = "int4-weight"
    group_size: int = Field(32, gt=0)
    method: Literal["rtn", "gptq"] = "gptq"
    damp: float = Field(0.01, gt=0, lt=1, description="GPTQ: Hessian dampening, share of its mean diagonal")
    act_order: bool = Field(True, description="GPTQ: quantize columns in order of decreasing Hessian diagonal")
    kernel: Literal["dequant", "int4pack"] = Field(
        "dequant", description="dequant: unpack to fp32 (exact reference); int4pack: torch's CPU int4 kernel with "
                               "bf16 activations, faster than fp32 on AVX512 CPUs; same saved weights")

    @field_validator("group_size")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"group_size {v} must be even (two int4 values pack into one byte); try 32 or 64")
        return v


SchemeConfig = Annotated[Int8DynamicConfig | Int8WeightConfig | Int4WeightConfig, Field(discriminator="scheme")]


class QATConfig(BaseModel):
    """Quantization-aware training: fake-quantize (straight-through estimator), distil, then convert.

    ``target`` is the scheme the model ends in. With ``only_if_drop_above`` set (the hybrid path), PTQ with
    ``target`` runs first and training happens only when its perplexity increase on held-out calibration
    windows exceeds that value.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = 1
    scheme: Literal["qat"] = "qat"
    target: SchemeConfig
    steps: int = Field(20, ge=1)
    lr: float = Field(1e-5, gt=0)
    batch_size: int = Field(4, ge=1)
    temperature: float = Field(1.0, gt=0)
    only_if_drop_above: float | None = Field(None, gt=0)
    holdout: int = Field(4, ge=1, description="calibration rows held out to measure the drop")


QuantConfig = Annotated[
    Int8DynamicConfig | Int8WeightConfig | Int4WeightConfig | QATConfig, Field(discriminator="scheme")
]
SCHEMES = ("int8-dynamic", "int8-weight", "int4-weight")


def parse_config(data: dict) -> BaseModel:
    """Build a config from a plain dict (a recipe's YAML), dispatching on ``scheme``."""
    from pydantic import TypeAdapter, ValidationError

    from slimlm.errors import ConfigError

    try:
        return TypeAdapter(QuantConfig).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            raise ConfigError(f"unknown quantization scheme {data.get('scheme')!r}; use one of "
                              f"{', '.join(SCHEMES)} (or qat with a target scheme).") from None
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ConfigError(f"quantization config field {where}: {first['msg']}.") from None
