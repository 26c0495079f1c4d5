"""Structure: which parameters are coupled, and which removal ratios a standard HF config can express.

Coupled groups (what surgery removes together):
  - a query head: its ``head_dim`` rows of q and the same columns of o; a KV group: one k/v head with the
    ``heads / kv_heads`` query heads that read it;
  - an FFN channel: one row of gate and up (and the up bias) and one column of down;
  - a hidden channel: one column of the embeddings (and of a tied lm_head), of every q/k/v/gate/up, one
    row of every o/down, and one entry of every norm;
  - a block: everything in it.
transformers' Llama config also requires ``hidden_size % num_attention_heads == 0`` (head_dim is explicit,
but the check remains): head counts that break it are refused, and the hidden width is rounded to the
nearest multiple of the number of heads (the report gives the width actually kept).
BERT's config derives the head size as ``hidden_size / num_attention_heads`` (and transformers 5 has no
``pruned_heads``), so on BERT heads and hidden width are removed together, by the same ratio: a kept hidden
width of exactly ``kept heads x head size`` keeps the head size, and surgery does both in one rebuild.
Widths stay uniform across layers (the config has one ``intermediate_size``, one ``num_attention_heads``),
so every layer loses the same number of units, each layer choosing its own least important ones.
`plan` checks every requested ratio before any statistic is computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from slimlm.errors import ConfigError
from slimlm.models import FamilyAdapter, Model

if TYPE_CHECKING:
    from slimlm.prune.structured import StructuredConfig


@dataclass(frozen=True)
class HeadPlan:
    """Remove ``groups`` whole KV groups, or ``per_group`` query heads from every group, in every layer."""

    mode: str
    groups: int = 0
    per_group: int = 0

    def remaining(self, heads: int, kv: int) -> tuple[int, int]:
        g = heads // kv
        if self.mode == "groups":
            return heads - self.groups * g, kv - self.groups
        return heads - self.per_group * kv, kv


@dataclass(frozen=True)
class StructuredPlan:
    """What to remove; ``joint_width``: heads and hidden width go in one step (BERT)."""

    layers: int = 0
    heads: HeadPlan | None = None
    ffn_keep: int | None = None
    hidden_keep: int | None = None
    vocab: bool = False
    joint_width: bool = False


def _count(total: int, ratio: float, what: str, tol: float = 0.1) -> int:
    n = ratio * total
    k = int(round(n))
    if abs(n - k) > tol:
        raise ConfigError(
            f"{what}={ratio:g} removes {n:.2f} of {total}; give a ratio that is a whole number of units, "
            f"for example {k / total:.4g} ({k}) or {(k + 1) / total:.4g} ({k + 1})."
        )
    return k


def head_plan(heads: int, kv: int, ratio: float, mode: str, hidden: int | None = None) -> HeadPlan:
    """Resolve a head ratio for ``heads`` query heads in ``kv`` KV groups, or fail listing the valid ratios.

    ``hidden``: transformers' Llama config requires ``hidden_size % num_attention_heads == 0``, so head
    counts that do not divide the hidden size are not offered.
    """
    g = heads // kv

    def fits(remaining: int) -> bool:
        return hidden is None or hidden % remaining == 0

    valid_groups = [k * g / heads for k in range(1, kv) if fits(heads - k * g)]
    valid_query = [r * kv / heads for r in range(1, g) if fits(heads - r * kv)]
    options = []
    if valid_groups:
        options.append("whole KV groups (head_mode=groups): " + ", ".join(f"{v:.4g}" for v in valid_groups))
    if valid_query:
        options.append("query heads evenly per group (head_mode=query): " + ", ".join(f"{v:.4g}" for v in valid_query))
    hint = "; ".join(options) or "none for this model"
    n = ratio * heads
    k = int(round(n))
    if abs(n - k) <= 0.1 and k > 0:
        if mode in ("auto", "groups") and k % g == 0 and k // g < kv and fits(heads - k):
            return HeadPlan("groups", groups=k // g)
        if mode in ("auto", "query") and k % kv == 0 and k // kv < g and fits(heads - k):
            return HeadPlan("query", per_group=k // kv)
    raise ConfigError(
        f"heads={ratio:g} with head_mode={mode} cannot be expressed for {heads} query heads in {kv} KV groups "
        f"(removes {n:.2f} heads); valid ratios: {hint}."
    )


def _bert_width(a: FamilyAdapter, cfg: StructuredConfig) -> tuple[HeadPlan, int]:
    """BERT: ``heads=R,hidden=R`` removes whole heads with their share of the hidden width; anything else fails."""
    n, hd = a.num_heads, a.head_dim
    if not cfg.heads:
        valid = ", ".join(f"{k / n:.4g}" for k in range(1, n))
        raise ConfigError(
            f"hidden={cfg.hidden:g} on BERT is removed together with whole heads (BERT's head size is "
            f"hidden_size/num_attention_heads): give heads=R,hidden=R with R one of {valid}."
        )
    hp = head_plan(n, a.num_kv_heads, cfg.heads, cfg.head_mode)
    if not cfg.hidden:
        raise ConfigError(
            f"give hidden={cfg.heads:g} too (BERT's head size is hidden_size/num_attention_heads): "
            f"heads={cfg.heads:g},hidden={cfg.heads:g}"
        )
    removed = hp.groups  # MHA: every KV group is one head
    if abs(cfg.hidden * a.hidden_size - removed * hd) > 0.1 * hd:
        raise ConfigError(
            f"hidden={cfg.hidden:g} must remove the width of the {removed} heads that heads={cfg.heads:g} removes "
            f"({removed * hd} of {a.hidden_size} channels; BERT's head size is hidden_size/num_attention_heads): "
            f"give heads={cfg.heads:g},hidden={cfg.heads:g}."
        )
    return hp, (n - removed) * hd


#: quantized kernels work on rows in blocks of 32 (GGUF Q8_0/Q4_0/Q5_x, int4 groups of 32 or more): an FFN
#: width that is not a multiple leaves its down projection in 16 bits in llama.cpp
WIDTH_MULTIPLE = 32


def round_width(keep: int, full: int, multiple: int = WIDTH_MULTIPLE) -> int:
    """``keep`` rounded to the nearest multiple of ``multiple`` that removes something, when ``full`` is itself
    a multiple of at least 8 such blocks (the widths of real models); unchanged otherwise (tiny test models)."""
    if full % multiple or full < 8 * multiple:
        return keep
    return min(max(multiple, int(round(keep / multiple)) * multiple), full - multiple)


def plan(model: Model, cfg: StructuredConfig) -> StructuredPlan:
    """Check every part of ``cfg`` against ``model`` before any work; return what will be removed."""
    a = model.adapter
    layers = 0
    if cfg.layers:
        layers = int(cfg.layers) if cfg.layers >= 1 else _count(a.num_layers, cfg.layers, "layers", tol=0.5)
        if layers >= a.num_layers:
            raise ConfigError(f"layers={cfg.layers:g} would remove all {a.num_layers} layers; remove at most {a.num_layers - 1}.")
    heads, hidden_keep = None, None
    joint = a.family == "bert" and bool(cfg.heads or cfg.hidden)
    if joint:
        heads, hidden_keep = _bert_width(a, cfg)
    elif cfg.heads:
        heads = head_plan(a.num_heads, a.num_kv_heads, cfg.heads, cfg.head_mode, a.hidden_size)
    ffn_keep = None
    if cfg.ffn:
        ffn_keep = a.intermediate_size - int(round(cfg.ffn * a.intermediate_size))
        if cfg.version >= 2:
            ffn_keep = round_width(ffn_keep, a.intermediate_size)
        if not 0 < ffn_keep < a.intermediate_size:
            raise ConfigError(f"ffn={cfg.ffn:g} of {a.intermediate_size} channels keeps {ffn_keep}; use a ratio that "
                              f"keeps between 1 and {a.intermediate_size - 1}.")
        if cfg.ffn_importance == "taylor" and not a.causal:
            raise ConfigError("ffn_importance=taylor needs a causal LM loss; use ffn_importance=activation for encoders.")
    if cfg.hidden and not joint:
        # the config needs hidden_size % num_attention_heads == 0: keep the nearest multiple of the heads
        n_heads = heads.remaining(a.num_heads, a.num_kv_heads)[0] if heads else a.num_heads
        hidden_keep = int(round((1 - cfg.hidden) * a.hidden_size / n_heads)) * n_heads
        if not 0 < hidden_keep < a.hidden_size:
            raise ConfigError(
                f"hidden={cfg.hidden:g} of {a.hidden_size} channels rounds to {hidden_keep} (a multiple of the "
                f"{n_heads} heads, as the config requires); use a ratio between {n_heads / a.hidden_size:.3g} "
                f"and {1 - n_heads / a.hidden_size:.3g}."
            )
    if cfg.vocab and not a.causal:
        raise ConfigError("vocab=domain supports causal LMs with a BPE tokenizer only; drop vocab for encoders.")
    return StructuredPlan(layers=layers, heads=heads, ffn_keep=ffn_keep, hidden_keep=hidden_keep,
                          vocab=bool(cfg.vocab), joint_width=joint)
