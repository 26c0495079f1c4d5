"""Pruning: ``prune_(model, config, calib)``, dispatched on the config's type.

Each method is a config class and a handler, registered beside each other in ``_HANDLERS`` below (no
scanning). Concerns are split as in DESIGN.md §5: ``importance/`` scores, ``structure/`` coupled groups and
valid ratios, ``surgery`` physical removal that rebuilds the HF model from an updated config.

Example:
    >>> from slimlm.models import load
    >>> from slimlm.data import load_data
    >>> from slimlm.prune import WandaConfig, make_calibration, prune_
    >>> model = load("builtin:smollm2-135m")
    >>> calib = make_calibration(model, load_data("shakespeare"), n=32, seq_len=512)
    >>> report = prune_(model, WandaConfig(sparsity=0.5, allocation="owl"), calib)
    >>> report["sparsity"]
    0.5
"""

from __future__ import annotations

import time
from collections.abc import Callable

from slimlm.errors import ConfigError
from slimlm.models import Model
from slimlm.prune.calibrate import Calibration, as_calibration, make_calibration
from slimlm.prune.config import (
    MagnitudeConfig,
    SparseGPTConfig,
    StructuredConfig,
    WandaConfig,
    config_from_dict,
    make_config,
    parse_structured,
)
from slimlm.prune.schedule import ScheduleConfig, run_schedule
from slimlm.prune.structured import prune_structured
from slimlm.prune.unstructured import prune_unstructured, sparsity_report

# config type -> handler(model, config, calibration | None, progress) -> report
_HANDLERS: dict[type, Callable] = {
    MagnitudeConfig: prune_unstructured,
    WandaConfig: prune_unstructured,
    SparseGPTConfig: prune_unstructured,
    StructuredConfig: prune_structured,
}


def prune_(model: Model, config, calib=None, *, progress=None) -> dict:
    """Prune ``model`` in place according to ``config``.

    Args:
        model: a loaded `Model`; structured pruning replaces ``model.hf`` (and ``model.tokenizer`` for
            ``vocab=domain``) with smaller ones.
        config: a `MagnitudeConfig`, `WandaConfig`, `SparseGPTConfig` or `StructuredConfig`.
        calib: a `Calibration` (from `make_calibration`), a ``(n, seq_len)`` LongTensor of token ids, or
            ``None`` for methods that need no data (uniform magnitude).
        progress: optional ``progress(desc, done, total)``.

    Returns:
        A report: ``params_before``, ``params_after``, ``seconds`` and the method's measurements (achieved
        sparsity per layer for unstructured methods; what was removed for structured ones).
    """
    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise ConfigError(
            f"{type(config).__name__} is not a pruning config; use one of "
            f"{', '.join(c.__name__ for c in _HANDLERS)}."
        )
    before = model.num_params()
    start = time.perf_counter()
    report = handler(model, config, as_calibration(calib), progress)
    return {"params_before": before, "params_after": model.num_params(),
            "seconds": time.perf_counter() - start, **report}


def save_kwargs(config, report: dict, model: Model | None = None) -> dict:
    """Keyword arguments for `slimlm.models.save` recording a pruning stage: config, measured sparsity, vocab map.

    Example:
        >>> save(model, "out/wanda50", **save_kwargs(cfg, report, model))
    """
    metrics = {k: report[k] for k in ("sparsity", "sparsity_all_params", "params", "nonzero_params") if k in report}
    if "layers" in report and isinstance(report["layers"], list):
        metrics["sparsity_per_layer"] = [
            {k: row[k] for k in ("layer", "target", "achieved") if k in row} for row in report["layers"]
        ]
    summary = {k: v for k, v in report.items() if k not in ("modules", "layers") or k == "layers" and
               isinstance(v, dict)}
    extra: dict = {"prune": summary}
    if model is not None and model.provenance.get("vocab_map"):
        extra["vocab_map"] = model.provenance["vocab_map"]
    return {"stage": {"kind": "prune", "config": config.model_dump()}, "metrics": metrics, "extra": extra}


__all__ = [
    "Calibration", "MagnitudeConfig", "ScheduleConfig", "SparseGPTConfig", "StructuredConfig", "WandaConfig",
    "config_from_dict", "make_calibration", "make_config", "parse_structured", "prune_", "run_schedule", "save_kwargs",
    "sparsity_report",
]
