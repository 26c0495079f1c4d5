"""Pruning: ``prune_(model, config, calib)``, dispatched on the config's type.

Each method is one module holding its config and its handler, registered below (no scanning):
`unstructured` (magnitude, Wanda, SparseGPT, N:M, OWL), `structured` (layers, heads, FFN, hidden,
vocabulary, with physical removal) and `lowrank` (truncated-SVD factorisation of Linear layers). Concerns
are split as in Torch-Pruning: ``importance/`` scores, ``structure/`` coupled groups and valid ratios,
``surgery`` physical removal that rebuilds the HF model from an updated config.

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

from slimlm.calibration import Calibration, as_calibration, make_calibration
from slimlm.methods import register
from slimlm.prune.base import PruneMethod, prune_, save_kwargs
from slimlm.prune.config import config_from_dict, make_config, parse_structured
from slimlm.prune.lowrank import LowRankConfig
from slimlm.prune.schedule import ScheduleConfig, run_schedule
from slimlm.prune.structured import StructuredConfig
from slimlm.prune.unstructured import MagnitudeConfig, SparseGPTConfig, WandaConfig, sparsity_report

register(StructuredConfig)
register(MagnitudeConfig)
register(WandaConfig)
register(SparseGPTConfig)
register(LowRankConfig)

__all__ = [
    "Calibration", "LowRankConfig", "MagnitudeConfig", "PruneMethod", "ScheduleConfig", "SparseGPTConfig",
    "StructuredConfig", "WandaConfig", "as_calibration", "config_from_dict", "make_calibration", "make_config",
    "parse_structured", "prune_", "run_schedule", "save_kwargs", "sparsity_report",
]
