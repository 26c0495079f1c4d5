"""Structured pruning handler: layers, heads, FFN channels, hidden channels, vocabulary, in that order.

Every ratio is checked first (`structure.plan`); then each kind, in turn, scores its units on the current
model (so FFN importance is measured after layers were dropped), keeps the best ones, and calls surgery.
Layer removal is one-shot (ShortGPT): rank all blocks once and drop the lowest, no re-scoring in between.
On BERT, heads and hidden width are one step at the heads' place: both are scored on the same model and
removed in one rebuild, since its config cannot describe fewer heads at the old width (`structure`).
"""

from __future__ import annotations

import torch

from slimlm._progress import or_noop
from slimlm.errors import ConfigError
from slimlm.models import Model
from slimlm.prune.calibrate import Calibration
from slimlm.prune.config import StructuredConfig
from slimlm.prune.importance import structured as imp
from slimlm.prune.structure import HeadPlan, plan
from slimlm.prune.surgery import drop_layers, slice_bert_width, slice_ffn, slice_heads, slice_hidden
from slimlm.prune.vocab import trim_vocab


def choose_heads(scores: torch.Tensor, heads: int, kv: int, hp: HeadPlan) -> tuple[list[int], list[int]]:
    """Kept (query heads, KV heads) of one layer, listed group by group so the GQA mapping survives."""
    g = heads // kv
    per_group = scores.reshape(kv, g)  # (kv, heads per group)
    if hp.mode == "groups":
        keep_kv = sorted(torch.topk(per_group.sum(1), kv - hp.groups).indices.tolist())
        return [k * g + j for k in keep_kv for j in range(g)], keep_kv
    keep_q = []
    for k in range(kv):
        best = sorted(torch.topk(per_group[k], g - hp.per_group).indices.tolist())
        keep_q += [k * g + j for j in best]
    return keep_q, list(range(kv))


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(scores, k).indices.sort().values


def prune_structured(model: Model, cfg: StructuredConfig, calib: Calibration | None, progress=None) -> dict:
    """Remove structure per ``cfg``; returns what was removed and the shapes before and after."""
    progress = or_noop(progress)
    p = plan(model, cfg)
    if calib is None:
        raise ConfigError("structured pruning needs calibration data; pass --data (and --calib-samples).")
    a = model.adapter
    report: dict = {"method": "structured", "shape_before": a.describe()}
    if p.layers:
        if cfg.layer_importance == "block_influence":
            scores = imp.block_influence(model, calib, progress)
        else:
            scores = imp.layer_loss_increase(model, calib, progress)
        remove = sorted(torch.tensor(scores).argsort()[: p.layers].tolist())
        drop_layers(model, remove)
        report["layers"] = {"importance": cfg.layer_importance, "scores": scores, "removed": remove}
    if p.heads:
        a = model.adapter
        heads, kv = a.num_heads, a.num_kv_heads
        scores = imp.head_activation(model, calib, progress)
        chosen = [choose_heads(s, heads, kv, p.heads) for s in scores]
        keep_q, keep_kv = [c[0] for c in chosen], [c[1] for c in chosen]
        report["heads"] = {"mode": p.heads.mode, "kept_query_heads": keep_q, "kept_kv_heads": keep_kv}
        if p.joint_width:
            hidden = _top(imp.hidden_activation(model, calib, progress), p.hidden_keep)
            slice_bert_width(model, keep_q, hidden)
            report["hidden"] = {"kept": p.hidden_keep}
        else:
            slice_heads(model, keep_q, keep_kv)
    if p.ffn_keep is not None:
        fn = imp.ffn_activation if cfg.ffn_importance == "activation" else imp.ffn_taylor
        scores = fn(model, calib, progress)
        slice_ffn(model, [_top(s, p.ffn_keep) for s in scores])
        report["ffn"] = {"importance": cfg.ffn_importance, "kept": p.ffn_keep}
    if p.hidden_keep is not None and not p.joint_width:
        scores = imp.hidden_activation(model, calib, progress)
        slice_hidden(model, _top(scores, p.hidden_keep))
        report["hidden"] = {"kept": p.hidden_keep}
    if p.vocab:
        report["vocab"] = trim_vocab(model, calib.texts)
    report["shape_after"] = model.adapter.describe()
    return report
