"""Helpers shared by the pruning configs: building and validating a config from CLI fields or a recipe.

Each method's config lives with its handler (`unstructured`, `structured`, `lowrank`); this module only
turns user input into one, through the method registry (`slimlm.methods`).
"""

from __future__ import annotations

from typing import Literal

from slimlm.errors import ConfigError
from slimlm.methods import MethodConfig, methods, parse_method

Extra = Literal["lm_head", "embeddings"]


def parse_pattern(pattern: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``: keep N of every M consecutive weights."""
    try:
        n, m = (int(x) for x in str(pattern).split(":"))
    except ValueError:
        raise ValueError(f"pattern {pattern!r} is not N:M (for example 2:4 or 4:8)") from None
    if not 0 < n < m:
        raise ValueError(f"pattern {pattern!r} needs 0 < N < M (for example 2:4)")
    return n, m


def make_config(method: str, **fields) -> MethodConfig:
    """Build and validate a config; errors become one `ConfigError` naming each bad field."""
    if method not in methods("prune"):
        raise ConfigError(f"unknown pruning method {method!r}; use one of {', '.join(methods('prune'))}.")
    return parse_method("prune", {"method": method, **fields})


def config_from_dict(data: dict) -> MethodConfig:
    """Rebuild a config from ``model_dump()`` output (a recipe's YAML), dispatching on ``method``."""
    data = dict(data)
    if "method" not in data:
        raise ConfigError(f"prune config has no 'method'; use one of {', '.join(methods('prune'))}.")
    return make_config(data.pop("method"), **data)


def parse_structured(spec: str, **fields) -> MethodConfig:
    """Parse ``"layers=6,heads=0.25,ffn=0.25,hidden=0.1,vocab=domain,vocab_keep=pydoc"`` into a `StructuredConfig`."""
    out: dict = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--structured item {item!r} is not key=value (for example ffn=0.25).")
        if key not in ("layers", "heads", "ffn", "hidden", "vocab", "vocab_keep"):
            raise ConfigError(f"--structured key {key!r} is unknown; use layers, heads, ffn, hidden or vocab "
                              "(and vocab_keep=DATA with vocab=domain).")
        out[key] = value
    return make_config("structured", **out, **fields)
