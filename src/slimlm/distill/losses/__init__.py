"""Distillation losses, one small module each; every one is tested against its reference formula."""

from slimlm.distill.losses.attention import attention_kl, group_heads, pool, relation_loss
from slimlm.distill.losses.ce import causal_ce, class_ce, mix
from slimlm.distill.losses.classification import class_kd_loss
from slimlm.distill.losses.fused import head_loss
from slimlm.distill.losses.hidden import HiddenTransfer, hidden_loss
from slimlm.distill.losses.kl import kd_loss, masked_mean
from slimlm.distill.losses.topk import teacher_topk, topk_kd_loss

__all__ = [
    "HiddenTransfer", "attention_kl", "causal_ce", "class_ce", "class_kd_loss", "group_heads", "head_loss", "hidden_loss",
    "kd_loss", "masked_mean", "mix", "pool", "relation_loss", "teacher_topk", "topk_kd_loss",
]
