"""Structured pruning handler: layers, heads, FFN channels, hidden channels, vocabulary, in that order.

Every ratio is checked first (`structure.plan`); then each kind, in turn, scores its units on the current
model (so FFN importance is measured after layers were dropped), keeps the best ones, and calls surgery.
Layer removal is one-shot (ShortGPT): rank all blocks once and drop the lowest, no re-scoring in between.
On BERT, heads and hidden width are one step at the heads' place: both are scored on the same model and
removed in one rebuild, since its config cannot describe fewer heads at the old width (`structure`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from slimlm._progress import or_noop
from slimlm.calibration import Calibration
from slimlm.errors import ConfigError
from slimlm.models import Model
from slimlm.prune.base import PruneMethod
from slimlm.prune.importance import structured as imp
from slimlm.prune.structure import HeadPlan, plan
from slimlm.prune.surgery import drop_layers, slice_bert_width, slice_ffn, slice_heads, slice_hidden
from slimlm.prune.vocab import trim_vocab


class StructuredConfig(PruneMethod):
    """Physical removal; every field is optional and the set ones are applied in the order listed here.

    ``layers``: a count (``6``) or a fraction (``0.2``) of blocks to drop, ranked by ``layer_importance``
    (``block_influence`` = 1 − cos(h_in, h_out), ShortGPT; ``perplexity`` = calibration loss with the
    layer removed alone). ``heads``: fraction of query heads to remove, ``head_mode`` ``groups`` (whole KV
    groups), ``query`` (the same number of query heads from every group) or ``auto`` (groups if the ratio
    allows). ``ffn``: fraction of FFN channels (``ffn_importance`` ``activation``: mean |input of down|,
    Minitron; ``taylor``: |a · dL/da|), the kept width rounded to the nearest multiple of 32 on real widths
    (quantized kernels' row block; ``version=1`` configs keep the exact ratio). ``hidden``: fraction of
    hidden channels (Minitron). ``vocab``: ``domain`` keeps the tokens seen in the calibration corpus (plus
    specials and byte fallbacks); ``vocab_keep``: a data spec (e.g. ``pydoc``) whose text's tokens are kept
    too, so that the general text a model must still read is not split into smaller, costlier pieces.
    """

    method: Literal["structured"] = "structured"
    #: 2: the kept FFN width is rounded to a multiple of 32 (quantized kernels' block); 1: as the ratio says
    version: int = 2
    layers: float | None = Field(None, ge=0)
    layer_importance: Literal["block_influence", "perplexity"] = "block_influence"
    heads: float | None = Field(None, ge=0, lt=1)
    head_mode: Literal["auto", "groups", "query"] = "auto"
    ffn: float | None = Field(None, ge=0, lt=1)
    ffn_importance: Literal["activation", "taylor"] = "activation"
    hidden: float | None = Field(None, ge=0, lt=1)
    vocab: Literal["domain"] | None = None
    vocab_keep: str | None = None

    added_defaults: ClassVar[dict[str, Any]] = {"vocab_keep": None}

    @model_validator(mode="after")
    def _check(self):
        if self.layers is not None and self.layers >= 1 and self.layers != int(self.layers):
            raise ValueError(f"layers={self.layers:g}: give a whole count (6) or a fraction below 1 (0.2)")
        if all(getattr(self, k) in (None, 0) for k in ("layers", "heads", "ffn", "hidden", "vocab")):
            raise ValueError("nothing to prune; set at least one of layers, heads, ffn, hidden, vocab")
        if self.vocab_keep and not self.vocab:
            raise ValueError(f"vocab_keep={self.vocab_keep} needs vocab=domain")
        return self

    space: ClassVar[dict[str, Any]] = {"layers": 0, "ffn": 0.0, "heads": 0.0, "vocab": "none", "vocab_keep": "none"}

    def label(self) -> str:
        parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                 for k in ("layers", "heads", "ffn", "hidden", "vocab", "vocab_keep") if (v := getattr(self, k))]
        return "prune " + ",".join(parts)

    def hardware(self) -> str:
        return "structurally smaller dense model: faster on any hardware"

    @classmethod
    def check_model_value(cls, key, value, model):
        if key not in ("layers", "ffn", "heads") or not value:
            return None
        try:
            plan(model, cls(**{key: value}))
        except (ConfigError, ValueError) as exc:
            return str(exc).rstrip(".")
        return None

    @classmethod
    def from_pick(cls, pick, fixed, before):
        body = {k: pick[k] for k in ("layers", "ffn", "heads") if pick.get(k)}
        if pick.get("vocab") not in (None, "none"):  # domain vocabulary trimming
            body["vocab"] = pick["vocab"]
            if pick.get("vocab_keep") not in (None, "none"):  # ... keeping a general corpus's tokens too
                body["vocab_keep"] = pick["vocab_keep"]
        if not body or any(s.get("prune") for s in before):
            return None
        return {"prune": {"method": "structured", **body}, "calibration": fixed.get("calibration", {})}

    def prune(self, model, calib, progress) -> dict:
        return prune_structured(model, self, calib, progress)


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
        texts = list(calib.texts)
        if cfg.vocab_keep:  # every split of the kept corpus, as for the domain
            from slimlm.calibration import corpus_texts
            from slimlm.data import load_data

            texts += corpus_texts(load_data(cfg.vocab_keep))
        report["vocab"] = trim_vocab(model, texts)
        report["vocab"]["kept_from"] = cfg.vocab_keep
    report["shape_after"] = model.adapter.describe()
    return report
