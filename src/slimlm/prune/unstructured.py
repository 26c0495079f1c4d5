"""Unstructured and N:M pruning of the blocks' Linear layers: magnitude, Wanda, SparseGPT, with OWL allocation.

One handler serves the three methods: they differ only in the statistic they collect (none, input column
norms, input Hessian) and in how a layer is pruned from it. Calibrated methods run block by block through
`LayerRunner`, so block i is pruned from the inputs that the already pruned blocks 0..i-1 produce.
Embeddings and ``lm_head`` are left dense unless ``include`` names them (then per-row magnitude).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from slimlm._progress import or_noop
from slimlm.calibration import Calibration, InputStats
from slimlm.errors import ConfigError
from slimlm.methods import methods
from slimlm.models import Model
from slimlm.prune.base import PruneMethod
from slimlm.prune.calibrate import LayerRunner, input_groups
from slimlm.prune.config import Extra, parse_pattern
from slimlm.prune.importance import magnitude, outlier_ratio, owl_allocation, wanda
from slimlm.prune.masks import nm_mask, row_mask
from slimlm.prune.sparsegpt import sparsegpt_


class _Unstructured(PruneMethod):
    """Shared fields of the unstructured methods.

    ``sparsity`` is the fraction of weights zeroed in every pruned Linear (the mean over layers with OWL).
    ``pattern`` ``"N:M"`` keeps N of every M consecutive input weights (2:4 implies sparsity 0.5).
    ``allocation`` ``owl`` gives layers with more activation outliers lower sparsity (Yin et al. 2023):
    layer sparsity spans ``sparsity ± owl_lambda``, outliers are scores above ``owl_threshold`` × the mean.
    ``include`` adds ``lm_head`` / ``embeddings`` (pruned by per-row magnitude; excluded by default).
    ``sequential`` feeds each layer the outputs of the already pruned layers before it (slower, better).
    """

    sparsity: float = Field(0.5, ge=0.0, lt=1.0)
    pattern: str | None = None
    allocation: Literal["uniform", "owl"] = "uniform"
    owl_threshold: float = Field(5.0, gt=0)
    owl_lambda: float = Field(0.08, ge=0, lt=0.5)
    include: tuple[Extra, ...] = ()
    sequential: bool = True

    @model_validator(mode="before")
    @classmethod
    def _pattern_sets_sparsity(cls, data):
        if isinstance(data, dict) and data.get("pattern"):
            n, m = parse_pattern(data["pattern"])
            implied = 1 - n / m
            given = data.get("sparsity")
            if given is not None and abs(float(given) - implied) > 1e-6:
                raise ValueError(
                    f"pattern {data['pattern']} means sparsity {implied:g}; drop --sparsity or set it to {implied:g}"
                )
            data = {**data, "sparsity": implied}
        return data

    @model_validator(mode="after")
    def _check(self):
        if self.pattern and self.allocation != "uniform":
            raise ValueError("an N:M pattern fixes every layer's sparsity; use allocation uniform with a pattern")
        if self.allocation == "owl" and self.sparsity - self.owl_lambda < 0:
            raise ValueError(f"owl_lambda {self.owl_lambda} exceeds sparsity {self.sparsity}; lower owl_lambda")
        return self

    space: ClassVar[dict[str, Any]] = {"unstructured": "none"}

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_pattern(self.pattern) if self.pattern else None

    @property
    def needs_calibration(self) -> bool:
        return self.allocation == "owl"

    def label(self) -> str:
        return f"{self.method} {self.pattern}" if self.pattern else f"{self.method} {self.sparsity:.0%}"

    def hardware(self) -> str:
        if self.pattern:
            return f"{self.pattern} sparsity needs sparse tensor cores (NVIDIA Ampere+); no CPU speedup"
        return "unstructured sparsity: no speedup on dense kernels; smaller only if stored sparse"

    @classmethod
    def check_space_value(cls, key, value):
        names = [n for n, c in methods("prune").items() if issubclass(c, _Unstructured)]
        method = str(value).partition(":")[0]
        if key == "unstructured" and value != "none" and method not in names:
            return f"unstructured {value!r}: use none or METHOD:SPARSITY / METHOD:N:M with METHOD one of {', '.join(names)}"
        return None

    @classmethod
    def from_pick(cls, pick, fixed, before):
        method, _, amount = str(pick.get("unstructured", "none")).partition(":")
        if method != cls.method_name() or any(s.get("prune") for s in before):
            return None
        body = {"method": method, **({"pattern": amount} if ":" in amount else {"sparsity": float(amount or 0.5)})}
        return {"prune": body, "calibration": fixed.get("calibration", {})}

    def stats_wanted(self) -> dict | None:
        """Which input statistics `InputStats` collects per block (None: the method needs no data)."""
        return None

    def prune_linear(self, lin: nn.Linear, stats: InputStats | None, group: str | None, sparsity: float) -> None:
        """Zero weights of one Linear to ``sparsity`` (given its input group's statistics)."""
        _apply(lin, _mask(magnitude(lin.weight), sparsity, self))

    def prune(self, model, calib, progress) -> dict:
        return prune_unstructured(model, self, calib, progress)


class MagnitudeConfig(_Unstructured):
    """Zero the smallest |W| in every output row (no calibration unless ``allocation="owl"``)."""

    method: Literal["magnitude"] = "magnitude"


class WandaConfig(_Unstructured):
    """Zero the smallest |W_ij|·‖X_j‖ in every output row (Sun et al. 2023)."""

    method: Literal["wanda"] = "wanda"

    @property
    def needs_calibration(self) -> bool:
        return True

    def stats_wanted(self) -> dict | None:
        return {"norms": True}

    def prune_linear(self, lin, stats, group, sparsity) -> None:
        _apply(lin, _mask(wanda(lin.weight, stats.norm(group)), sparsity, self))


class SparseGPTConfig(_Unstructured):
    """OBS-style pruning with reconstruction from the inverse Hessian of calibration inputs (Frantar 2023).

    ``blocksize`` columns are masked and updated together (lazy batched updates); ``damp`` is added to the
    Hessian diagonal as a fraction of its mean.
    """

    method: Literal["sparsegpt"] = "sparsegpt"
    blocksize: int = Field(128, ge=1)
    damp: float = Field(0.01, gt=0)

    @property
    def needs_calibration(self) -> bool:
        return True

    def stats_wanted(self) -> dict | None:
        return {"gram": True}

    def prune_linear(self, lin, stats, group, sparsity) -> None:
        sparsegpt_(lin.weight.data, stats.gram(group), stats.tokens(group), sparsity=sparsity, nm=self.nm,
                   blocksize=self.blocksize, damp=self.damp)


def _check_pattern(model: Model, cfg: _Unstructured) -> None:
    if cfg.nm is None:
        return
    m = cfg.nm[1]
    for name, lin in model.adapter.block_linears().items():
        if lin.in_features % m:
            raise ConfigError(
                f"pattern {cfg.pattern} needs every pruned layer's input width to be a multiple of {m}, but "
                f"{name} has {lin.in_features}; use a pattern whose M divides it."
            )


def _mask(score: torch.Tensor, sparsity: float, cfg: _Unstructured) -> torch.Tensor:
    return nm_mask(score, *cfg.nm) if cfg.nm else row_mask(score, sparsity)


@torch.no_grad()
def _apply(lin: nn.Linear, mask: torch.Tensor) -> None:
    lin.weight.data[mask] = 0


def _owl_sparsities(model: Model, cfg: _Unstructured, calib: Calibration, progress) -> tuple[list[float], list[float]]:
    """Dense pass: each block's outlier ratio of Wanda scores -> per-block sparsities (OWL)."""
    runner = LayerRunner(model, calib.tokens, calib.batch_size, progress)
    ratios = []
    layers = model.adapter.layers()
    for i, layer in enumerate(layers):
        groups = input_groups(model, layer)
        with InputStats({g: mods[0] for g, mods in groups.items()}, norms=True) as stats:
            outs = runner.run(layer)
        scores = [wanda(lin.weight, stats.norm(g)) for g, mods in groups.items() for lin in mods]
        ratios.append(outlier_ratio(scores, cfg.owl_threshold))
        runner.advance(outs=outs)
        progress("owl: outlier ratios", i + 1, len(layers))
    return owl_allocation(ratios, cfg.sparsity, cfg.owl_lambda), ratios


def prune_unstructured(model: Model, cfg: _Unstructured, calib: Calibration | None, progress=None) -> dict:
    """Zero weights in place per ``cfg``; returns the sparsity report (target and achieved, per layer)."""
    progress = or_noop(progress)
    _check_pattern(model, cfg)
    if cfg.needs_calibration and calib is None:
        raise ConfigError(f"method {cfg.method} with allocation {cfg.allocation} needs calibration data; pass --data.")
    layers = model.adapter.layers()
    targets = [cfg.sparsity] * len(layers)
    outliers = None
    if cfg.allocation == "owl":
        targets, outliers = _owl_sparsities(model, cfg, calib, progress)

    want = cfg.stats_wanted()
    if want is not None and calib is None:
        raise ConfigError(f"method {cfg.method} needs calibration data; pass --data.")
    runner = LayerRunner(model, calib.tokens, calib.batch_size, progress) if want is not None else None
    for i, layer in enumerate(layers):
        groups = input_groups(model, layer)
        if runner is None:
            for mods in groups.values():
                for lin in mods:
                    cfg.prune_linear(lin, None, None, targets[i])
        else:
            with InputStats({g: mods[0] for g, mods in groups.items()}, **want) as stats:
                outs = runner.run(layer)
            for g, mods in groups.items():
                for lin in mods:
                    cfg.prune_linear(lin, stats, g, targets[i])
            runner.advance(layer if cfg.sequential else None, None if cfg.sequential else outs)
        progress(f"prune ({cfg.method})", i + 1, len(layers))

    extras = _prune_extras(model, cfg)
    report = sparsity_report(model, targets, extras)
    report.update({"method": cfg.method, "pattern": cfg.pattern, "allocation": cfg.allocation,
                   "sparsity_target": cfg.sparsity,
                   "calibration_tokens": runner.tokens if runner else (calib.tokens.numel() if outliers else 0)})
    if outliers is not None:
        for row, r in zip(report["layers"], outliers, strict=True):
            row["outlier_ratio"] = r
    model.rehash()
    return report


@torch.no_grad()
def _prune_extras(model: Model, cfg: _Unstructured) -> dict[str, nn.Module]:
    extras: dict[str, nn.Module] = {}
    if "embeddings" in cfg.include:
        extras["embeddings"] = model.adapter.embeddings()
    if "lm_head" in cfg.include and model.adapter.lm_head() is not None:
        extras["lm_head"] = model.adapter.lm_head()
    done: set[int] = set()
    for mod in extras.values():
        if id(mod.weight) in done:  # tied lm_head and embeddings: one tensor, pruned once
            continue
        done.add(id(mod.weight))
        mod.weight.data[row_mask(magnitude(mod.weight), cfg.sparsity)] = 0
    return extras


def _zeros(t: torch.Tensor) -> int:
    return int((t == 0).sum())


def sparsity_report(model: Model, targets: list[float] | None = None, extras: dict | None = None) -> dict:
    """Measured zeros: per Linear, per block (with its target) and over all pruned weights."""
    names = {id(m): n for n, m in model.hf.named_modules()}
    modules: dict[str, float] = {}
    rows = []
    zeros = total = 0
    for i, layer in enumerate(model.adapter.layers()):
        lz = lt = 0
        for mod in layer.modules():
            if isinstance(mod, nn.Linear):
                z, n = _zeros(mod.weight), mod.weight.numel()
                modules[names[id(mod)]] = z / n
                lz, lt = lz + z, lt + n
        row = {"layer": i, "achieved": lz / max(lt, 1)}
        if targets is not None:
            row["target"] = targets[i]
        rows.append(row)
        zeros, total = zeros + lz, total + lt
    for name, mod in (extras or {}).items():
        modules[name] = _zeros(mod.weight) / mod.weight.numel()
    all_params = model.num_params()
    nonzero = all_params - sum(_zeros(p) for p in {id(p): p for p in model.hf.parameters()}.values())
    return {"sparsity": zeros / max(total, 1), "layers": rows, "modules": modules,
            "params": all_params, "nonzero_params": nonzero, "sparsity_all_params": 1 - nonzero / all_params}
