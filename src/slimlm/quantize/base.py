"""What every quantization scheme shares: the fp32 exceptions, the per-layer fallback, the contract answers.

Each scheme is one module holding its config and its layer builder (`int8`, `int4`, `qat`), registered in
the package ``__init__``. What depends on the model (a group size must divide every quantized layer's input
width) is checked by the driver before any heavy work, and fails with the valid values listed.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from slimlm.methods import MethodConfig, StageResult

SKIPPABLE = ("lm_head", "embed")


def parse_fallback(value) -> dict | None:
    """A search value of ``quantize_fallback``: ``none``, a tolerance (``0.02`` or ``2%``: sensitive layers back
    to fp32) or ``int8:TOL`` (sensitive layers to int8 weight-only: per-layer precision). Returns the
    `FallbackConfig` fields or None."""
    text = str(value).strip().lower()
    if text in ("none", "", "off"):
        return None
    to, _, tol = text.rpartition(":") if ":" in text else ("fp32", "", text)
    to = {"fp32": "fp32", "int8": "int8-weight", "int8-weight": "int8-weight"}.get(to)
    try:
        t = float(tol[:-1]) / 100 if tol.endswith("%") else float(tol)
    except ValueError:
        t = None
    if to is None or t is None or not 0 < t <= 10:
        raise ValueError(f"quantize_fallback {value!r}: use none, a tolerance such as 0.02 or 2% (sensitive layers "
                         "back to fp32), or int8:2% (sensitive layers to int8 weight-only)")
    return {"tolerance": t, "to": to}


class FallbackConfig(BaseModel):
    """Per-layer fallback: move the most sensitive layers to a higher precision until a quality tolerance holds.

    ``tolerance`` is the allowed relative perplexity increase over the fp32 model on held-out calibration
    windows (0.01 = 1%). Sensitivity is the KL divergence from the fp32 model when only that layer is
    quantized. ``to`` is where a sensitive layer goes: ``fp32`` (kept as it was), or ``int8-weight`` (int8
    weight-only per channel): per-layer precision, int8 where the scheme's own type costs most and that type
    (int4) elsewhere, chosen from the measured sensitivity.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    added_defaults: ClassVar[dict[str, Any]] = {"to": "fp32"}
    version: int = 1
    to: Literal["fp32", "int8-weight"] = "fp32"
    tolerance: float = Field(0.01, gt=0, le=10)
    max_layers: int | None = Field(None, ge=0, description="at most this many layers stay in fp32")
    holdout: int = Field(4, ge=1, description="calibration rows held out to check the tolerance")


class QuantScheme(MethodConfig):
    """Base of the PTQ schemes: which parts stay in fp32, the per-layer fallback, and the contract answers
    they share. A scheme's handler is `build_layer` (one Linear -> its quantized module) plus the statistics
    it asks for (`stats_wanted`); `slimlm.quantize.api.ptq_` drives them."""

    family: ClassVar[str] = "quantize"
    key_field: ClassVar[str | None] = "scheme"
    space: ClassVar[dict[str, Any]] = {"quantize": "none", "quantize_skip": "lm_head,embed", "quantize_fallback": "none"}
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


    @property
    def needs_calibration(self) -> bool:
        return self.fallback is not None or bool(self.stats_wanted())

    def stats_wanted(self) -> dict:
        """`slimlm.calibration.InputStats` options this scheme needs on the calibration batch ({}: none)."""
        return {}

    def quantize(self, model, calib, progress, checkpoint_dir=None, max_seconds=None) -> dict:
        """The handler: post-training quantization through the shared driver (``checkpoint_dir`` and the time
        budget ``max_seconds``: for schemes that train; PTQ has nothing to checkpoint or stop)."""
        from slimlm.quantize.api import ptq_

        return ptq_(model, self, calib, progress)

    def build_layer(self, name: str, mod: nn.Module, stats) -> nn.Module:
        """The quantized replacement of one Linear (embeddings are handled by the driver)."""
        raise NotImplementedError

    def label(self) -> str:
        quantized_too = [p for p in SKIPPABLE if p not in self.skip]
        # the default keeps both in fp32; name what was quantized on request
        return self.scheme + (" +" + "+".join(quantized_too) if quantized_too else "")

    @classmethod
    def check_space_value(cls, key, value):
        from slimlm.methods import methods

        names = [n for n, c in methods("quantize").items() if issubclass(c, QuantScheme)]
        if key == "quantize" and value != "none" and value not in names:
            return f"quantize {value!r} is not a scheme; use none or one of {', '.join(names)}"
        if key == "quantize_fallback":
            try:
                parse_fallback(value)
            except ValueError as exc:
                return str(exc)
        return None

    @classmethod
    def from_pick(cls, pick, fixed, before):
        if pick.get("quantize") != cls.method_name():
            return None
        body: dict[str, Any] = {"scheme": cls.method_name(), **fixed.get("quantize", {})}
        if "quantize_skip" in pick.get("_given", ()):
            body["skip"] = str(pick["quantize_skip"])
        fb = parse_fallback(pick.get("quantize_fallback", "none"))
        if fb is not None and not (fb["to"] == cls.method_name()):  # int8 fallback of an int8-weight stage: none
            body["fallback"] = fb
        return {"quantize": body, "calibration": fixed.get("calibration", {})}

    def apply(self, model, calib, ctx) -> StageResult:
        from slimlm.quantize.api import quantize_

        before = model.num_params()
        report = quantize_(model, self, calib, progress=ctx.progress, checkpoint_dir=ctx.checkpoint_dir)
        record = {k: v for k, v in report.items() if k in ("quantized", "fp32_layers", "int8_layers", "fallback", "qat")}
        return StageResult(report={"params_before": before, **report}, record=record)


