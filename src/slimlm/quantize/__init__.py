"""Quantize: ``quantize_(model, config, calib)`` with PTQ schemes (int8-dynamic, int8-weight, int4-weight with
RTN or GPTQ, SmoothQuant, per-layer fallback) and QAT; ``save`` for quantized variants (`slimlm.models.load`
restores them).

Each scheme is one module holding its config and handler, registered below (no scanning).
"""


from slimlm.errors import ConfigError
from slimlm.methods import methods, parse_method, register
from slimlm.models.qlayers import describe, logical_params, restore
from slimlm.quantize.api import check_config, compile_, quantize_, select_targets, valid_group_sizes
from slimlm.quantize.base import SKIPPABLE, FallbackConfig, QuantScheme
from slimlm.quantize.int4 import Int4WeightConfig
from slimlm.quantize.int8 import Int8DynamicConfig, Int8WeightConfig
from slimlm.quantize.qat import QATConfig
from slimlm.quantize.saving import save

register(Int8DynamicConfig)
register(Int8WeightConfig)
register(Int4WeightConfig)
register(QATConfig)

SCHEMES = tuple(n for n in methods("quantize") if n != "qat")


def parse_config(data: dict) -> QuantScheme | QATConfig:
    """Build a config from a plain dict (a recipe's YAML), dispatching on ``scheme``."""
    if not isinstance(data, dict) or data.get("scheme") not in methods("quantize"):
        scheme = data.get("scheme") if isinstance(data, dict) else None
        raise ConfigError(f"unknown quantization scheme {scheme!r}; use one of "
                          f"{', '.join(SCHEMES)} (or qat with a target scheme).")
    return parse_method("quantize", data)


__all__ = [
    "SCHEMES", "SKIPPABLE", "FallbackConfig", "Int4WeightConfig", "Int8DynamicConfig", "Int8WeightConfig",
    "QATConfig", "QuantScheme", "check_config", "compile_", "describe", "logical_params", "parse_config",
    "quantize_", "restore", "save", "select_targets", "valid_group_sizes",
]
