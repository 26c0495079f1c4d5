"""`DistillConfig`: everything a distillation run needs, typed, validated and YAML-round-trippable.

One flat config rather than one class per loss: the losses combine (KD + CE + hidden + attention +
relation weights), and a recipe that names ``loss: reverse-kl`` and ``hidden_weight: 1.0`` reads better
than nested objects. The ``kind`` literal is the discriminator the recipe system dispatches on.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from slimlm.methods import MethodConfig, StageResult

LossName = Literal["kl", "reverse-kl", "jsd", "topk", "ce"]


class DistillConfig(MethodConfig):
    """Configuration of `slimlm.distill.distill`.

    Loss: ``loss`` picks the logit term (``kl`` forward KL(t||s), ``reverse-kl`` KL(s||t), ``jsd`` with
    ``beta``, ``topk`` forward KL on the teacher's ``top_k`` logits (cacheable), ``ce`` hard labels only,
    i.e. plain fine-tuning). ``alpha`` mixes in hard-label CE: ``L = alpha*CE + (1-alpha)*KD``. Extra
    terms are added with their weights: hidden-state transfer (``hidden_weight``, ``hidden_loss``,
    ``layer_map`` or derived from the pruning provenance), attention transfer on the last layer
    (``attention_weight``), relation transfer on pooled last hidden states (``relation_weight``).

    Data: the train split of the run's corpus; with ``general_data`` (a data spec such as ``pydoc``) a share
    ``general_share`` of the training rows comes from that corpus's train split instead, deterministically
    (`slimlm.distill.data.MixedLMBatches`), so that a student specialised on the domain keeps general ability.
    Language models only.

    Optimisation: AdamW (``lr``, ``weight_decay``), linear warm-up for ``warmup_steps`` then cosine decay
    to ``min_lr_ratio * lr`` at ``steps``; gradient clipping at ``clip`` (0: off); ``grad_accum``
    micro-batches of ``batch_size`` sequences of ``seq_len`` tokens per step and process.
    ``lr_scaling="size"`` lowers lr by sqrt(135M / params) and adds warm-up on models above 135M;
    ``divergence_factor`` stops the run (restoring the best or the starting weights) when the loss diverges
    (0: off). See `slimlm.distill.guard`.

    What trains: ``freeze_embeddings`` keeps the token embeddings and the LM head (one matrix when tied)
    fixed: no gradient for the vocabulary projection and no optimizer state for it (for SmolLM2 a fifth of the
    parameters, for a 150k vocabulary a quarter of a 0.5B model). ``freeze_layers`` keeps the embeddings and
    the lowest N blocks fixed, so the backward pass stops at block N: cheaper steps, at the price of
    repairing the blocks below only through the ones above.

    Memory: ``teacher_precision`` stores the teacher's linear and embedding weights in bfloat16 while it
    distils (computed in float32; restored afterwards): ``auto`` does so for teachers of 300M parameters or
    more, ``float32``/``bfloat16`` force it. See `slimlm.distill.teacher`. ``gradient_checkpointing`` keeps
    only each block's input for the backward pass and recomputes the rest there (transformers' activation
    checkpointing): the same gradients, one more forward pass of the blocks, and the activations of one block
    instead of all of them, which is what grows with ``batch_size`` x ``seq_len``.
    """

    family: ClassVar[str] = "distill"
    added_defaults: ClassVar[dict[str, Any]] = {"freeze_embeddings": False, "freeze_layers": 0,
                                                "teacher_precision": "auto", "gradient_checkpointing": False}
    space: ClassVar[dict[str, Any]] = {"distill_steps": 0, "distill_loss": "kl", "distill_alpha": None,
                                       "distill_general_share": None}
    kind: Literal["distill"] = "distill"
    # loss
    loss: LossName = "kl"
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.5, gt=0, lt=1)
    alpha: float = Field(0.0, ge=0, le=1)
    top_k: int = Field(64, ge=1)
    hidden_weight: float = Field(0.0, ge=0)
    hidden_loss: Literal["cosine", "mse"] = "cosine"
    layer_map: list[tuple[int, int]] | None = None
    attention_weight: float = Field(0.0, ge=0)
    relation_weight: float = Field(0.0, ge=0)
    # optimisation
    steps: int = Field(100, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    clip: float = Field(1.0, ge=0)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    seq_len: int = Field(256, ge=2)
    seed: int = 0
    # what trains
    freeze_embeddings: bool = False
    freeze_layers: int = Field(0, ge=0)
    teacher_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    gradient_checkpointing: bool = False
    # data mixing: keep general ability while specialising
    general_data: str | None = None
    general_share: float = Field(0.0, ge=0, lt=1)
    # evaluation, early stopping, checkpoints, caching
    eval_every: int = Field(0, ge=0)
    eval_tokens: int = Field(4096, ge=2)
    eval_split: Literal["train", "calibration", "eval"] = "eval"
    patience: int = Field(0, ge=0)
    restore_best: bool = True
    checkpoint_every: int = Field(0, ge=0)
    cache_teacher: bool = False
    # defaults that hold on larger models (slimlm.distill.guard)
    lr_scaling: Literal["size", "none"] = "size"
    divergence_factor: float = Field(3.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        if self.loss == "ce" and self.alpha not in (0.0, 1.0):
            raise ValueError("loss='ce' is hard labels only; set alpha to 1.0 (or leave it 0) or pick a KD loss")
        if self.cache_teacher and self.loss != "topk":
            raise ValueError("cache_teacher stores the teacher's top-k logits: it needs loss='topk'")
        if self.cache_teacher and (self.hidden_weight or self.attention_weight or self.relation_weight):
            raise ValueError("cache_teacher keeps logits only: hidden/attention/relation weights need the live teacher")
        if self.general_share and not self.general_data:
            raise ValueError("general_share needs general_data (a data spec such as pydoc) to mix in")
        if self.general_data and not self.general_share:
            raise ValueError("general_data needs general_share > 0 (the share of training rows it provides)")
        if self.patience and not self.eval_every:
            raise ValueError("patience (early stopping) needs eval_every > 0")
        if self.warmup_steps >= self.steps and self.warmup_steps:
            raise ValueError("warmup_steps must be smaller than steps")
        return self

    @property
    def uses_teacher_outputs(self) -> bool:
        return self.loss != "ce" or bool(self.hidden_weight or self.attention_weight or self.relation_weight)

    @property
    def ce_weight(self) -> float:
        return 1.0 if self.loss == "ce" else self.alpha

    def label(self) -> str:
        return f"distill {self.loss} {self.steps} steps"

    def hardware(self) -> str:
        return ""  # recovers quality; changes no shape

    @classmethod
    def from_pick(cls, pick, fixed, before):
        if not before or not pick.get("distill_steps"):  # nothing to recover without a compression stage
            return None
        body = {**fixed.get("distill", {}), "loss": pick.get("distill_loss", "kl"), "steps": int(pick["distill_steps"])}
        if pick.get("distill_alpha") is not None:  # hard-label CE share of the loss
            body["alpha"] = float(pick["distill_alpha"])
        if pick.get("distill_general_share") is not None:  # share of general rows (needs fixed general_data)
            body["general_share"] = float(pick["distill_general_share"])
        return {"distill": body}

    def apply(self, model, calib, ctx) -> StageResult:
        from slimlm.distill.trainer import distill_run

        before = model.num_params()
        res = distill_run(model, ctx.teacher, ctx.corpus, self, checkpoint_dir=ctx.checkpoint_dir,
                          resume=ctx.checkpoint_dir is not None, progress=ctx.progress, on_metrics=ctx.on_metrics)
        summary = res.summary()
        return StageResult(report={"params_before": before, "params_after": model.num_params(), **summary},
                           extra={"distill": summary},
                           record={k: summary[k] for k in ("steps", "tokens", "seconds", "final_losses")})
