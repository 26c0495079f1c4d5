"""The distillation trainer: ``distill(student, teacher, corpus, cfg)`` returns the trained student.

A plain loop in the nanoGPT spirit rather than a ``transformers.Trainer`` subclass: the teacher forward,
the loss mix and the checkpoint contents stay visible in one file, and resume is exact because everything
a step depends on is either in the checkpoint (weights, AdamW moments, schedule, history) or a function of
the step number (the data rows, see `slimlm.distill.data`, and the dropout RNG, reseeded every step).

Data parallel: when ``torch.distributed`` is initialised (``torchrun``, ``accelerate launch``, or the
gloo test), every rank reads its own micro-batches and gradients are averaged with one ``all_reduce`` per
step over a flat buffer. That is simpler than wrapping in DDP (which also owns the hidden-transfer
projections and needs ``no_sync`` for accumulation) at the price of no compute/communication overlap:
fine on CPUs and small models; for large GPU runs DDP/FSDP would overlap the reduction.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from slimlm._progress import or_noop
from slimlm.data import Corpus
from slimlm.distill import recompute
from slimlm.distill.cache import open_cache
from slimlm.distill.checkpoint import RESUME_MAY_CHANGE, has_checkpoint, load_checkpoint, save_checkpoint
from slimlm.distill.data import ClassBatches, LMBatches, MixedLMBatches
from slimlm.distill.guard import DivergenceGuard, WeightsOnDisk, scale_for_size
from slimlm.distill.layer_map import derive_layer_map, model_provenance
from slimlm.distill.losses import (
    HiddenTransfer,
    attention_kl,
    causal_ce,
    class_ce,
    head_loss,
    kd_loss,
    mix,
    pool,
    relation_loss,
    teacher_topk,
    topk_kd_loss,
)
from slimlm.distill.optim import adamw
from slimlm.distill.teacher import resolve as resolve_precision
from slimlm.distill.teacher import teacher_precision
from slimlm.errors import ConfigError, DataError
from slimlm.models import Model

if TYPE_CHECKING:
    from slimlm.distill.config import DistillConfig

MetricsFn = Callable[[dict], None]
_DIRECTION = {"kl": "forward", "reverse-kl": "reverse", "jsd": "jsd"}


@dataclass
class DistillResult:
    """What a run did: the trained student plus numbers for the CLI, the benchmark and provenance."""

    model: Model
    steps: int
    tokens: int
    seconds: float
    final_losses: dict
    eval_curve: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    best_step: int | None = None
    resumed_from: int | None = None
    cache: dict | None = None
    history: list[dict] = field(default_factory=list)
    diverged: str | None = None  # why the run was stopped as diverging (weights restored), else None
    lr: float | None = None  # the peak learning rate used (after size scaling)
    warmup_steps: int | None = None
    teacher_precision: str = "float32"  # how the teacher's weights were stored while it distilled
    out_of_time: int | None = None  # the step at which the time budget stopped the run (checkpoint kept), else None

    def summary(self) -> dict:
        return {"steps": self.steps, "tokens": self.tokens, "seconds": round(self.seconds, 2),
                "diverged": self.diverged, "lr": self.lr, "warmup_steps": self.warmup_steps,
                "final_losses": self.final_losses, "eval_curve": self.eval_curve,
                "stopped_early": self.stopped_early, "best_step": self.best_step,
                "resumed_from": self.resumed_from, "teacher_cache": self.cache,
                "teacher_precision": self.teacher_precision, "out_of_time": self.out_of_time}


def lr_factor(step: int, cfg: DistillConfig) -> float:
    """Linear warm-up to 1, then cosine to ``min_lr_ratio`` at ``cfg.steps`` (step is 0-based)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _device(model: Model) -> torch.device:
    """Training runs where the student's weights are (move student and teacher before calling)."""
    return next(model.hf.parameters()).device


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def teacher_vocab_map(student: Model, teacher: Model) -> torch.Tensor | None:
    """Student token id -> teacher token id, for a vocabulary-trimmed student (``vocab=domain``) taught by
    its full-vocabulary parent; ``None`` when both read the same ids.

    The teacher then reads the student's text in its own ids, and its logits are restricted to the student's
    tokens (the softmax over them renormalises: the target is the teacher's distribution given that the next
    token is one the student can emit). Raises `ConfigError` when the vocabularies cannot be matched.
    """
    s_map, t_map = student.provenance.get("vocab_map"), teacher.provenance.get("vocab_map")
    sv, tv = student.adapter.vocab_size, teacher.adapter.vocab_size
    if s_map == t_map or (not s_map and sv == tv and not t_map):
        if sv != tv:
            raise ConfigError(f"teacher vocabulary ({tv}) differs from the student's ({sv}); logit distillation "
                              "needs the same tokenizer.")
        return None
    if s_map and not t_map and len(s_map) == sv and max(s_map) < tv:
        return torch.as_tensor(s_map, dtype=torch.long)
    raise ConfigError(f"teacher vocabulary ({tv}) differs from the student's ({sv}) and the student is not a "
                      "vocabulary-trimmed variant of it; logit distillation needs the same tokenizer or the "
                      "student's full-vocabulary parent as the teacher.")


def _check(student: Model, teacher: Model | None, corpus: Corpus, cfg: DistillConfig) -> str:
    task = student.task
    if task == "encoder":
        raise DataError(f"{student.spec} has no task head to train; load it with a classification head "
                        "(num_labels) or fine-tune one first (slimlm finetune).")
    if task == "classification" and corpus.task != "classification":
        raise DataError(f"data {corpus.name!r} has no labels; a classifier needs labelled data "
                        "(shakespeare-genre, or .jsonl/.csv with a label field).")
    if task == "causal-lm" and corpus.task == "classification":
        raise DataError(f"data {corpus.name!r} is labelled passages; distil a causal LM on text data (shakespeare).")
    if cfg.uses_teacher_outputs:
        if teacher is None:
            raise ConfigError(f"loss {cfg.loss!r} needs a teacher; pass --teacher or use --loss ce.")
        if teacher.task != task:
            raise ConfigError(f"the teacher is a {teacher.task} model but the student is a {task} model; "
                              "give a teacher of the same kind.")
        if task == "causal-lm":
            teacher_vocab_map(student, teacher)  # raises when the vocabularies cannot be matched
        if task == "classification" and teacher.hf.config.num_labels != student.hf.config.num_labels:
            raise ConfigError("teacher and student heads have different numbers of classes.")
    limit = student.adapter.max_positions
    if limit and cfg.seq_len > limit:
        raise ConfigError(f"seq_len {cfg.seq_len} exceeds the student's {limit} positions; use at most {limit}.")
    if cfg.attention_weight and task == "causal-lm" and student.adapter.num_heads > teacher.adapter.num_heads:
        raise ConfigError("attention transfer needs the student to have at most as many heads as the teacher.")
    return task


class _Step:
    """Forward passes and the loss mix for one micro-batch."""

    def __init__(self, student: Model, teacher: Model | None, cfg: DistillConfig, task: str, rank: int):
        self.s, self.t, self.cfg, self.task = student, teacher, cfg, task
        self.hidden: HiddenTransfer | None = None
        if cfg.hidden_weight:
            n_s, n_t = student.adapter.num_layers, teacher.adapter.num_layers
            lmap = cfg.layer_map or derive_layer_map(n_s, n_t, model_provenance(student))
            bad = [(i, j) for i, j in lmap if not (0 <= i < n_s and 0 <= j < n_t)]
            if bad:
                raise ConfigError(f"layer_map pairs {bad} are out of range (student {n_s}, teacher {n_t} layers).")
            self.hidden = HiddenTransfer(lmap, student.adapter.hidden_size, teacher.adapter.hidden_size,
                                         cfg.hidden_loss).to(_device(student))
        self.need_hidden = bool(cfg.hidden_weight or cfg.relation_weight)
        self.need_attn = bool(cfg.attention_weight)
        self.cache = None
        self.vmap = None  # student id -> teacher id (vocabulary-trimmed student)
        if teacher is not None and task == "causal-lm":
            vmap = teacher_vocab_map(student, teacher)
            self.vmap = None if vmap is None else vmap.to(_device(student))
        # KD / CE from the final hidden states (slimlm.distill.losses.fused): the same loss and gradients
        # without whole-vocabulary logits
        self.fused = (task == "causal-lm" and cfg.loss in ("kl", "reverse-kl", "jsd", "topk", "ce")
                      and student.adapter.lm_head() is not None
                      and (not cfg.uses_teacher_outputs or teacher.adapter.lm_head() is not None))

    def _head_loss(self, s_out, t_out, input_ids: torch.Tensor, topk) -> tuple[torch.Tensor, dict]:
        """The fused KD + CE loss; ``topk``: the teacher's cached top-k (then ``t_out`` is None)."""
        cfg = self.cfg
        kd_weight = 0.0 if cfg.loss == "ce" else 1.0 - cfg.ce_weight
        head = self.s.adapter.lm_head()
        teacher = kd_weight and t_out is not None
        return head_loss(s_out.last_hidden_state, self.s.adapter.head_logits,
                         [p for p in head.parameters() if p.requires_grad],
                         h_t=t_out.last_hidden_state if teacher else None,
                         head_t=self.t.adapter.head_logits if teacher else None, teacher_ids=self.vmap,
                         input_ids=input_ids, kd_weight=kd_weight, ce_weight=cfg.ce_weight,
                         temperature=cfg.temperature, direction=_DIRECTION.get(cfg.loss, cfg.loss), beta=cfg.beta,
                         top_k=cfg.top_k, teacher_topk=topk)

    def __call__(self, rows: torch.Tensor, inputs: dict) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        device = _device(self.s)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        labels = inputs.pop("labels", None)
        mask = inputs.get("attention_mask")
        kw = {"output_hidden_states": self.need_hidden, "output_attentions": self.need_attn}
        if self.task == "causal-lm":
            kw["use_cache"] = False
        fused = self.fused
        s_out = (self.s.adapter.base() if fused else self.s.hf)(**inputs, **kw)
        parts: dict[str, torch.Tensor] = {}
        t_out, t_logits, topk = None, None, None
        if cfg.uses_teacher_outputs:
            if self.cache is not None:
                topk = self.cache.get(rows)
                if topk is not None:
                    topk = tuple(x.to(device) for x in topk)
            if topk is None:
                t_inputs = inputs if self.vmap is None else {**inputs, "input_ids": self.vmap[inputs["input_ids"]]}
                with torch.no_grad():
                    t_out = (self.t.adapter.base() if fused else self.t.hf)(**t_inputs, **kw)
                if not fused:
                    t_logits = t_out.logits
                    if self.vmap is not None:  # only the student's tokens; the softmax renormalises over them
                        t_logits = t_logits.index_select(-1, self.vmap)
                    if cfg.loss == "topk":
                        topk = teacher_topk(t_logits, cfg.top_k)
                        if self.cache is not None:
                            self.cache.put(rows, *topk)
        if fused:  # from the final hidden states, a chunk of positions at a time (no whole-vocabulary logits)
            loss, heads = self._head_loss(s_out, t_out, inputs["input_ids"], topk)
            computed = heads.pop("teacher_topk", None)
            if computed is not None and self.cache is not None:
                self.cache.put(rows, *computed)
            parts.update(heads)
        else:
            s_logits = s_out.logits  # (B, T, V) or (B, C)
            kd = None
            if cfg.loss == "topk":
                kd = topk_kd_loss(s_logits, *topk, temperature=cfg.temperature)
            elif cfg.loss != "ce":
                kd = kd_loss(s_logits, t_logits, temperature=cfg.temperature, direction=_DIRECTION[cfg.loss],
                             beta=cfg.beta)
            ce = None
            if cfg.ce_weight > 0:
                ce = (causal_ce(s_logits, inputs["input_ids"]) if self.task == "causal-lm"
                      else class_ce(s_logits, labels))
            if kd is not None:
                parts["kd"] = kd
            if ce is not None:
                parts["ce"] = ce
            loss = mix(ce, kd, cfg.ce_weight if kd is not None else 1.0)
        if self.hidden is not None:
            parts["hidden"] = self.hidden(s_out.hidden_states, t_out.hidden_states, mask)
            loss = loss + cfg.hidden_weight * parts["hidden"]
        if cfg.attention_weight:
            parts["attention"] = attention_kl(s_out.attentions[-1], t_out.attentions[-1], mask)
            loss = loss + cfg.attention_weight * parts["attention"]
        if cfg.relation_weight:
            parts["relation"] = relation_loss(pool(s_out.hidden_states[-1], mask), pool(t_out.hidden_states[-1], mask))
            loss = loss + cfg.relation_weight * parts["relation"]
        return loss, {k: float(v.detach()) for k, v in parts.items()}


def _eval_score(student: Model, corpus: Corpus, cfg: DistillConfig, task: str) -> dict:
    from slimlm.evaluate import evaluate

    was_training = student.hf.training
    student.hf.eval()
    try:
        seq = min(512, student.adapter.max_positions or 512)
        res = evaluate(student, corpus, split=cfg.eval_split, seq_len=seq, max_tokens=cfg.eval_tokens,
                       max_examples=256)
    finally:
        student.hf.train(was_training)
    if task == "causal-lm":
        return {"perplexity": res["perplexity"], "score": res["perplexity"]}
    return {"accuracy": res["accuracy"], "f1": res["f1"], "score": -res["accuracy"]}


def _mixed(domain: LMBatches, student: Model, cfg: DistillConfig, task: str) -> MixedLMBatches:
    """The domain batches with ``cfg.general_share`` of the rows from ``cfg.general_data``'s train split."""
    from slimlm.data import load_data

    if task != "causal-lm":
        raise ConfigError("general_data mixes in unlabelled text: it is for language models; leave it unset for a "
                          "classifier.")
    general = load_data(cfg.general_data)
    if not general.texts("train"):
        raise DataError(f"general_data {cfg.general_data!r} has no train split text; give a corpus with text to mix in.")
    return MixedLMBatches(domain, LMBatches(student.tokenizer, general, cfg.seq_len, cfg.seed + 1), cfg.general_share)


def _freeze(student: Model, cfg: DistillConfig) -> list[nn.Parameter]:
    """Stop gradients for what ``cfg`` keeps fixed; returns the parameters it froze (to unfreeze after)."""
    if not cfg.freeze_embeddings and not cfg.freeze_layers:
        return []
    ad = student.adapter
    n = ad.num_layers
    if cfg.freeze_layers >= n:
        raise ConfigError(f"freeze_layers={cfg.freeze_layers} leaves nothing to train: the student has {n} blocks; "
                          f"use at most {n - 1}.")
    modules: list[nn.Module] = [ad.embeddings()]
    if cfg.freeze_layers:
        emb = getattr(ad.base(), "embeddings", None)  # encoders: word, position and type embeddings together
        modules += ([emb] if isinstance(emb, nn.Module) else []) + list(ad.layers()[:cfg.freeze_layers])
    if cfg.freeze_embeddings and ad.lm_head() is not None:
        modules.append(ad.lm_head())
    out, seen = [], set()
    for m in modules:
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                p.requires_grad_(False)
                out.append(p)
    return out


def _checkpointing(student: Model, cfg: DistillConfig) -> bool:
    """Turn on activation checkpointing for ``cfg.gradient_checkpointing``; True when this run turned it on
    (turn it off with `recompute.turn_off`)."""
    return cfg.gradient_checkpointing and recompute.turn_on(student.hf)


def _same_config(saved: dict, cfg: DistillConfig) -> None:
    now = cfg.model_dump(mode="json")
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in RESUME_MAY_CHANGE)
    if diff:
        raise ConfigError(f"the checkpoint was written with different settings ({', '.join(diff)}); "
                          "resume with the same options or start a new run in another --out directory.")


def distill_run(
    student: Model,
    teacher: Model | None,
    corpus: Corpus,
    cfg: DistillConfig,
    *,
    eval_corpus: Corpus | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress=None,
    on_metrics: MetricsFn | None = None,
    max_seconds: float | None = None,
) -> DistillResult:
    """Train ``student`` in place to imitate ``teacher`` on ``corpus``'s train split.

    Args:
        student: the model to train (a causal LM, or an encoder with a classification head).
        teacher: frozen during training; may be None only for ``loss='ce'`` (plain fine-tuning).
        corpus: train split for training, ``cfg.eval_split`` of ``eval_corpus`` (default: ``corpus``) for
            periodic evaluation and early stopping.
        cfg: a `DistillConfig`.
        checkpoint_dir: where checkpoints go every ``cfg.checkpoint_every`` steps.
        resume: continue from the checkpoint in ``checkpoint_dir`` if there is one.
        progress: optional ``progress(desc, done, total)``.
        on_metrics: optional callable receiving ``{"step", "loss", "lr", "tokens_per_s", "eta_s", ...}``
            after every optimizer step and ``{"step", "eval": {...}}`` after every evaluation.
        max_seconds: a time budget for this call. Once a step ends past it, the run saves a checkpoint in
            ``checkpoint_dir`` (needed) and stops with ``out_of_time`` set to that step; ``resume`` continues it
            exactly, as from any checkpoint. The student is left with the weights of that step.

    Returns:
        A `DistillResult` whose ``model`` is ``student``, trained.
    """
    progress = or_noop(progress)
    task = _check(student, teacher, corpus, cfg)
    rank, world = _world()
    eval_corpus = eval_corpus or corpus
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if cfg.checkpoint_every and ckpt is None:
        raise ConfigError("checkpoint_every needs a checkpoint directory (--out).")
    if max_seconds is not None and ckpt is None:
        raise ConfigError("a time budget needs a checkpoint directory (--out) to continue from.")

    Batches = LMBatches if task == "causal-lm" else ClassBatches
    data = Batches(student.tokenizer, corpus, cfg.seq_len, cfg.seed)
    if cfg.general_data:
        data = _mixed(data, student, cfg, task)
    micro_per_step = cfg.batch_size * cfg.grad_accum * world

    torch.manual_seed(cfg.seed)  # the projections' init must not depend on the rank or on earlier work
    step_fn = _Step(student, teacher, cfg, task, rank)
    t_precision = resolve_precision(cfg.teacher_precision, teacher.num_params()) if teacher is not None else "float32"
    if not cfg.uses_teacher_outputs:
        t_precision = "float32"
    if cfg.cache_teacher:
        if task != "causal-lm":
            raise ConfigError("cache_teacher is for language models; classification teachers are cheap to run.")
        key = teacher.hash if t_precision == "float32" else f"{teacher.hash}:{t_precision}"
        if step_fn.vmap is not None:  # the top-k are in the student's ids: the map is part of what was cached
            key += ":vocab:" + hashlib.sha256(step_fn.vmap.cpu().numpy().tobytes()).hexdigest()[:12]
        step_fn.cache = open_cache(key, data.rows, cfg.top_k, rank)
    if teacher is not None:
        teacher.hf.eval()
        teacher.hf.requires_grad_(False)
    attn_impl = None
    if step_fn.need_attn:  # attention probabilities exist only in the eager implementation
        attn_impl = [m.hf.config._attn_implementation for m in (student, teacher)]
        for m in (student, teacher):
            m.hf.set_attn_implementation("eager")

    extra = step_fn.hidden
    frozen = _freeze(student, cfg)  # restored in the finally below
    checkpointing = _checkpointing(student, cfg)  # turned off again in the finally below
    params = [p for p in student.hf.parameters() if p.requires_grad]
    if extra is not None:
        params += list(extra.parameters())
    seen, unique = set(), []
    for p in params:  # tied embeddings appear once
        if id(p) not in seen:
            seen.add(id(p))
            unique.append(p)
    params = unique
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    size = sum(p.numel() for p in params) + sum(p.numel() for p in frozen)  # the model's size, frozen or not
    run_cfg = scale_for_size(cfg, size)  # lr / warm-up for the model's size
    opt = adamw([{"params": decay, "weight_decay": cfg.weight_decay},
                 {"params": no_decay, "weight_decay": 0.0}], lr=run_cfg.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, run_cfg))
    guard = DivergenceGuard(cfg.divergence_factor)
    start_state = WeightsOnDisk(student.hf) if cfg.divergence_factor else None  # restored if the loss diverges
    diverged = None

    start_step, history, eval_curve, tokens = 0, [], [], 0
    best: dict = {"score": math.inf, "step": None, "state": None, "bad": 0}
    resumed_from, out_of_time = None, None
    reduced = teacher_precision(teacher.hf if teacher is not None else None, t_precision)
    t_info = reduced.__enter__()  # left in the finally below: the teacher gets its float32 weights back
    try:  # the finally leaves the student, the teacher and the disk as they were, also when resuming fails
        if resume and ckpt is not None and has_checkpoint(ckpt):
            state, meta = load_checkpoint(ckpt)
            _same_config(meta["config"], cfg)
            if meta.get("world", 1) != world:
                raise ConfigError(f"the checkpoint was written by {meta['world']} processes; resume with the same number.")
            try:
                student.hf.load_state_dict(state["model"])
                if extra is not None:
                    extra.load_state_dict(state["extra"])
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
            except (RuntimeError, KeyError, ValueError) as exc:
                raise ConfigError(f"the checkpoint in {ckpt} does not fit this student ({str(exc).splitlines()[0][:120]}); "
                                  "delete it, or resume with the model it was written for.") from None
            torch.set_rng_state(state["rng"])
            start_step, tokens = meta["step"], meta["tokens"]
            history, eval_curve = meta["history"], meta["eval_curve"]
            best.update(score=meta["best"]["score"], step=meta["best"]["step"], bad=meta["best"]["bad"],
                        state=state.get("best_model"))
            resumed_from = start_step
        elif world > 1:  # every rank starts from rank 0's weights
            with torch.no_grad():
                for p in params:
                    dist.broadcast(p.data, 0)
        student.hf.train()
        t0 = time.perf_counter()
        run_tokens, run_time, stopped = 0, 0.0, False
        step = start_step
        for step in range(start_step, cfg.steps):
            t_step = time.perf_counter()
            torch.manual_seed(cfg.seed * 7919 + step * 31 + rank)  # dropout RNG: a function of the step
            opt.zero_grad(set_to_none=True)
            base = step * micro_per_step
            losses: dict[str, float] = {}
            step_tokens = 0
            for a in range(cfg.grad_accum):
                rows, inputs = data.batch(base + (a * world + rank) * cfg.batch_size, cfg.batch_size)
                step_tokens += int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else inputs["input_ids"].numel()
                loss, parts = step_fn(rows, inputs)
                (loss / cfg.grad_accum).backward()
                parts["loss"] = float(loss.detach())
                for k, v in parts.items():
                    losses[k] = losses.get(k, 0.0) + v / cfg.grad_accum
            if world > 1:
                _all_reduce_grads(params, world)
                counts = torch.tensor([float(step_tokens)], device=_device(student))
                dist.all_reduce(counts)
                step_tokens = int(counts.item())
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            lr = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            if step_fn.cache is not None:
                step_fn.cache.commit()
            tokens += step_tokens
            dt = time.perf_counter() - t_step
            run_tokens += step_tokens
            run_time += dt
            history.append({"step": step + 1, "lr": lr, **{k: round(v, 6) for k, v in losses.items()}})
            done = step + 1
            metrics = {"step": done, "steps": cfg.steps, "lr": lr, "tokens_per_s": run_tokens / max(run_time, 1e-9),
                       "eta_s": run_time / (done - start_step) * (cfg.steps - done), **losses}
            if on_metrics:
                on_metrics(metrics)
            progress("distill", done, cfg.steps)
            if guard.update(losses["loss"]):
                diverged = f"stopped at step {done}: {guard.reason}"
                break

            if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                stopped = _evaluate_and_maybe_stop(student, eval_corpus, cfg, task, done, tokens, eval_curve,
                                                   best, rank, world, on_metrics)
            late = (max_seconds is not None and not stopped and done < cfg.steps
                    and _agreed(time.perf_counter() - t0 >= max_seconds, student, world))
            if ckpt is not None and done < cfg.steps and (
                    late or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)):
                if rank == 0:
                    _save(ckpt, student, extra, opt, sched, cfg, done, tokens, history, eval_curve, best, world)
                if world > 1:
                    dist.barrier()
            if late:
                out_of_time = done
                break
            if stopped:
                break
    finally:
        reduced.__exit__(None, None, None)
        if start_state is not None and not diverged:
            start_state.close()
        for p in frozen:
            p.requires_grad_(True)
        if checkpointing:
            recompute.turn_off(student.hf)
        if attn_impl is not None:
            for m, impl in zip((student, teacher), attn_impl, strict=True):
                m.hf.set_attn_implementation(impl)
        student.hf.eval()

    if diverged:  # the best evaluated weights, else the ones the run started from
        try:
            student.hf.load_state_dict(best["state"] if best["state"] is not None else start_state.load())
        finally:
            start_state.close()
        diverged += (f"; restored the weights of step {best['step']}" if best["state"] is not None
                     else "; restored the weights it started from")
    elif best["state"] is not None and cfg.restore_best and best["step"] != step + 1 and out_of_time is None:
        student.hf.load_state_dict(best["state"])
    student.rehash()
    last = history[-10:]
    keys = sorted({k for h in last for k in h if k not in ("step", "lr")})
    final = {k: sum(h[k] for h in last if k in h) / len(last) for k in keys} if last else {}
    cache = None
    if step_fn.cache is not None:
        cache = {"hits": step_fn.cache.hits, "misses": step_fn.cache.misses, "dir": str(step_fn.cache.root)}
    return DistillResult(model=student, steps=len(history), tokens=tokens, seconds=time.perf_counter() - t0,
                         final_losses=final, eval_curve=eval_curve, stopped_early=stopped,
                         best_step=best["step"], resumed_from=resumed_from, cache=cache,
                         history=history, diverged=diverged, lr=run_cfg.lr, warmup_steps=run_cfg.warmup_steps,
                         teacher_precision=t_info["precision"], out_of_time=out_of_time)


def _agreed(flag: bool, student: Model, world: int) -> bool:
    """``flag`` on any rank, for every rank (each rank's clock differs; all must stop at the same step)."""
    if world <= 1:
        return flag
    t = torch.tensor([float(flag)], device=_device(student))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _all_reduce_grads(params: list[nn.Parameter], world: int) -> None:
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    i = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[i : i + n].view_as(p).clone()
        i += n


def _evaluate_and_maybe_stop(student, corpus, cfg, task, step, tokens, curve, best, rank, world, on_metrics) -> bool:
    stop = torch.zeros(1, device=_device(student))
    if rank == 0:
        res = _eval_score(student, corpus, cfg, task)
        entry = {"step": step, "tokens": tokens, **{k: v for k, v in res.items() if k != "score"}}
        curve.append(entry)
        if res["score"] < best["score"]:
            best.update(score=res["score"], step=step, bad=0)
            if cfg.patience:
                best["state"] = {k: v.detach().clone() for k, v in student.hf.state_dict().items()}
        else:
            best["bad"] += 1
        if on_metrics:
            on_metrics({"step": step, "eval": entry})
        stop[0] = float(bool(cfg.patience) and best["bad"] >= cfg.patience)
    if world > 1:
        dist.broadcast(stop, 0)
    return bool(stop.item())


def _save(ckpt, student, extra, opt, sched, cfg, step, tokens, history, eval_curve, best, world) -> None:
    state = {"model": student.hf.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "rng": torch.get_rng_state()}
    if extra is not None:
        state["extra"] = extra.state_dict()
    if best["state"] is not None:
        state["best_model"] = best["state"]
    meta = {"step": step, "tokens": tokens, "world": world, "config": cfg.model_dump(mode="json"),
            "history": history, "eval_curve": eval_curve,
            "best": {"score": best["score"], "step": best["step"], "bad": best["bad"]}}
    save_checkpoint(ckpt, state, meta)


def distill(student: Model, teacher: Model | None, corpus: Corpus, cfg: DistillConfig, **kwargs) -> Model:
    """Distil ``teacher`` into ``student`` (in place) and return the student; see `distill_run` for options.

    Example:
        >>> from slimlm.models import load
        >>> from slimlm.data import load_data
        >>> teacher = load("tiny:llama?layers=4")
        >>> student = load("tiny:llama?layers=2")
        >>> distill(student, teacher, load_data("shakespeare"), DistillConfig(steps=2, seq_len=32))  # doctest: +SKIP
    """
    return distill_run(student, teacher, corpus, cfg, **kwargs).model
