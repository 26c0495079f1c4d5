"""The pruning verb and what every pruning method shares.

``prune_(model, config, calib)`` dispatches on the config's type: each method's config (a `PruneMethod`)
carries its handler as ``prune``. `PruneMethod.apply` is the stage-runner side of the contract
(`slimlm.methods`): it runs ``prune_`` and records the measured sparsity and the vocabulary map.
"""

from __future__ import annotations

import time
from typing import ClassVar

from slimlm.calibration import as_calibration
from slimlm.errors import ConfigError
from slimlm.methods import MethodConfig, StageResult


class PruneMethod(MethodConfig):
    """Base of the pruning configs: ``method`` is the discriminator; calibrated unless a method says not."""

    family: ClassVar[str] = "prune"
    key_field: ClassVar[str | None] = "method"

    @property
    def needs_calibration(self) -> bool:
        return True

    def prune(self, model, calib, progress) -> dict:
        """The handler: prune ``model`` in place; return the method's measurements."""
        raise NotImplementedError

    def apply(self, model, calib, ctx) -> StageResult:
        report = prune_(model, self, calib, progress=ctx.progress)
        kw = save_kwargs(self, report, model)
        return StageResult(report=report, metrics=kw["metrics"], extra=kw["extra"])


def prune_(model, config, calib=None, *, progress=None) -> dict:
    """Prune ``model`` in place according to ``config``.

    Args:
        model: a loaded `Model`; structured pruning replaces ``model.hf`` (and ``model.tokenizer`` for
            ``vocab=domain``) with smaller ones.
        config: a pruning config (`MagnitudeConfig`, `WandaConfig`, `SparseGPTConfig`, `StructuredConfig`,
            `LowRankConfig`).
        calib: a `Calibration` (from `make_calibration`), a ``(n, seq_len)`` LongTensor of token ids, or
            ``None`` for methods that need no data (uniform magnitude, low rank).
        progress: optional ``progress(desc, done, total)``.

    Returns:
        A report: ``params_before``, ``params_after``, ``seconds`` and the method's measurements (achieved
        sparsity per layer for unstructured methods; what was removed for structured ones).
    """
    if not isinstance(config, PruneMethod):
        raise ConfigError(f"{type(config).__name__} is not a pruning config; use one of "
                          "MagnitudeConfig, WandaConfig, SparseGPTConfig, StructuredConfig, LowRankConfig.")
    before = model.num_params()
    start = time.perf_counter()
    report = config.prune(model, as_calibration(calib), progress)
    return {"params_before": before, "params_after": model.num_params(),
            "seconds": time.perf_counter() - start, **report}


def save_kwargs(config, report: dict, model=None) -> dict:
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
