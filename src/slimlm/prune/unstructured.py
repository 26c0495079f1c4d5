"""Unstructured and N:M pruning of the blocks' Linear layers: magnitude, Wanda, SparseGPT, with OWL allocation.

One handler serves the three methods: they differ only in the statistic they collect (none, input column
norms, input Hessian) and in how a layer is pruned from it. Calibrated methods run block by block through
`LayerRunner`, so block i is pruned from the inputs that the already pruned blocks 0..i-1 produce.
Embeddings and ``lm_head`` are left dense unless ``include`` names them (then per-row magnitude).
"""

from __future__ import annotations

import torch
from torch import nn

from slimlm._progress import or_noop
from slimlm.errors import ConfigError
from slimlm.models import Model
from slimlm.prune.calibrate import Calibration, LayerRunner, collect_inputs, input_groups
from slimlm.prune.config import SparseGPTConfig, WandaConfig, _Unstructured
from slimlm.prune.importance import magnitude, outlier_ratio, owl_allocation, wanda
from slimlm.prune.masks import nm_mask, row_mask
from slimlm.prune.sparsegpt import sparsegpt_


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
        stats, remove = collect_inputs({g: mods[0] for g, mods in groups.items()}, hessian=False)
        outs = runner.run(layer)
        remove()
        scores = [wanda(lin.weight, stats[g].norm) for g, mods in groups.items() for lin in mods]
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

    calibrated = isinstance(cfg, (WandaConfig, SparseGPTConfig))
    runner = LayerRunner(model, calib.tokens, calib.batch_size, progress) if calibrated else None
    for i, layer in enumerate(layers):
        groups = input_groups(model, layer)
        if runner is None:
            for mods in groups.values():
                for lin in mods:
                    _apply(lin, _mask(magnitude(lin.weight), targets[i], cfg))
        else:
            is_gpt = isinstance(cfg, SparseGPTConfig)
            stats, remove = collect_inputs({g: mods[0] for g, mods in groups.items()}, hessian=is_gpt)
            outs = runner.run(layer)
            remove()
            for g, mods in groups.items():
                s = stats[g]
                for lin in mods:
                    if is_gpt:
                        sparsegpt_(lin.weight.data, s.hessian, s.tokens, sparsity=targets[i], nm=cfg.nm,
                                   blocksize=cfg.blocksize, damp=cfg.damp)
                    else:
                        _apply(lin, _mask(wanda(lin.weight, s.norm), targets[i], cfg))
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
