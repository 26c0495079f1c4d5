"""Quantize: ``quantize_(model, config, calib)`` with PTQ schemes (int8-dynamic, int8-weight, int4-weight with
RTN or GPTQ, SmoothQuant, per-layer fallback) and QAT; ``save`` / ``restore`` for quantized variants."""

from slimlm.quantize.api import HANDLERS, check_config, compile_, quantize_, select_targets, valid_group_sizes
from slimlm.quantize.configs import (
    SCHEMES,
    FallbackConfig,
    Int4WeightConfig,
    Int8DynamicConfig,
    Int8WeightConfig,
    QATConfig,
    parse_config,
)
from slimlm.quantize.saving import describe, logical_params, restore, save

__all__ = [
    "HANDLERS", "SCHEMES", "FallbackConfig", "Int4WeightConfig", "Int8DynamicConfig", "Int8WeightConfig",
    "QATConfig", "check_config", "compile_", "describe", "logical_params", "parse_config", "quantize_", "restore", "save",
    "select_targets", "valid_group_sizes",
]
