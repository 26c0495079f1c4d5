"""Quantization-aware training: fake quantization with a straight-through estimator, then convert.

prepare: every Linear the scheme quantized becomes a `FakeQuantLinear` whose fp32 latent weight starts from
the PTQ result (so QAT never starts worse than PTQ) and whose forward rounds exactly as the real module will;
train: a few steps of distillation, forward KL from the unquantized teacher, on the calibration rows;
convert: round the latent weights with the same arithmetic into the real quantized modules.
The hybrid path (``only_if_drop_above``) stops after PTQ when its drop is already within tolerance.

The training loop is `kd_train`, smaller than `slimlm.distill`'s trainer on purpose: it trains on the
calibration rows (a token tensor, not a corpus), at a constant learning rate, with no periodic evaluation (the
held-out check comes after it). It uses the trainer's pieces: the loss from hidden states
(`slimlm.distill.losses.head_loss`), the teacher's precision, the divergence guard, fused AdamW, the checkpoint
format and activation checkpointing (`slimlm.distill.recompute`).
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, SerializeAsAny, field_validator
from torch import nn

from slimlm._progress import or_noop
from slimlm.distill.checkpoint import RESUME_MAY_CHANGE, has_checkpoint, load_checkpoint, save_checkpoint
from slimlm.distill.guard import DivergenceGuard
from slimlm.distill.losses.fused import head_loss
from slimlm.distill.losses.kl import kd_loss
from slimlm.distill.optim import adamw
from slimlm.distill.recompute import recompute_in_eval_mode
from slimlm.distill.teacher import resolve, teacher_precision
from slimlm.methods import MethodConfig, StageResult, parse_method
from slimlm.models.qlayers import (
    Int4WeightLinear,
    Int8DynamicLinear,
    Int8WeightLinear,
    QuantEmbedding,
    QuantLinear,
    float_weight,
    set_module,
    tie_table,
)
from slimlm.models.qmath import fake_int4_group, fake_int8_per_channel, fake_int8_per_token
from slimlm.quantize.base import QuantScheme
from slimlm.quantize.fallback import lm_loss
from slimlm.quantize.int4 import Int4WeightConfig


class QATConfig(MethodConfig):
    """Quantization-aware training: fake-quantize (straight-through estimator), distil, then convert.

    ``target`` is the scheme the model ends in. With ``only_if_drop_above`` set (the hybrid path), PTQ with
    ``target`` runs first and training happens only when its perplexity increase on held-out calibration
    windows exceeds that value.
    """

    family: ClassVar[str] = "quantize"
    key_field: ClassVar[str | None] = "scheme"
    scheme: Literal["qat"] = "qat"
    target: SerializeAsAny[QuantScheme]
    steps: int = Field(20, ge=1)
    lr: float | None = Field(None, gt=0, description="AdamW learning rate; default by target (`default_lr`)")
    batch_size: int = Field(4, ge=1)
    temperature: float = Field(1.0, gt=0)
    only_if_drop_above: float | None = Field(None, gt=0)
    holdout: int = Field(4, ge=1, description="calibration rows held out to measure the drop")
    checkpoint_every: int = Field(0, ge=0, description="write a resumable checkpoint every N steps (0: none)")
    gradient_checkpointing: bool = Field(False, description="recompute each block's activations in the backward "
                                         "pass instead of keeping them (less memory, same gradients)")

    added_defaults: ClassVar[dict] = {"checkpoint_every": 0, "gradient_checkpointing": False}

    @field_validator("target", mode="before")
    @classmethod
    def _parse_target(cls, v):
        if isinstance(v, dict):
            if v.get("scheme") == "qat":
                raise ValueError("a QAT target is a PTQ scheme (int8-dynamic, int8-weight, int4-weight)")
            return parse_method("quantize", v)
        return v

    @property
    def needs_calibration(self) -> bool:
        return True

    @property
    def skip(self) -> tuple[str, ...]:
        return self.target.skip

    def label(self) -> str:
        return f"qat {self.target.scheme}"

    def default_lr(self, trained_params: int) -> float:
        """The learning rate when ``lr`` is not given. int4: 3e-4, because a step must move a weight across
        half of its group's grid step (~1e-2) to change anything: on SmolLM2-135M, 10 steps at 1e-5 left the
        held-out perplexity where PTQ put it (x1.2781 to the last digit), 3e-4 closed 46% of PTQ's gap. int8
        (a grid 8-16x finer): 1e-5. Above 135M trained parameters, scaled by sqrt(135M / params), as distillation does."""
        from slimlm.distill.guard import REFERENCE_PARAMS

        base = 3e-4 if self.target.scheme == "int4-weight" else 1e-5
        return base * min(1.0, math.sqrt(REFERENCE_PARAMS / max(trained_params, 1)))

    def hardware(self) -> str:
        return self.target.hardware()

    def apply(self, model, calib, ctx) -> StageResult:
        return QuantScheme.apply(self, model, calib, ctx)

    def quantize(self, model, calib, progress, checkpoint_dir=None, max_seconds=None) -> dict:
        return qat_(model, self, calib, progress, checkpoint_dir=checkpoint_dir, max_seconds=max_seconds)


#: QAT stops when its loss becomes non-finite or its 5-step mean rises above this many times its lowest
#: (distillation's default); the held-out check after it then keeps PTQ's layers if QAT ended worse
DIVERGENCE_FACTOR = 3.0


class FakeQuantLinear(nn.Module):
    """A Linear that trains an fp32 latent weight but computes with its quantized value (STE gradient)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, scheme: str, group_size: int = 0,
                 symmetric: bool = False):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().float().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        zeros = self.weight.detach() == 0
        self.register_buffer("mask", (~zeros).float() if bool(zeros.any()) else None)  # pruned weights stay 0
        self.scheme, self.group_size, self.symmetric = scheme, group_size, symmetric

    def latent(self) -> torch.Tensor:
        return self.weight if self.mask is None else self.weight * self.mask

    def fake_weight(self) -> torch.Tensor:
        w = self.latent()
        return fake_int4_group(w, self.group_size, self.symmetric) if self.scheme == "int4-weight" else \
            fake_int8_per_channel(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scheme == "int8-dynamic":
            x = fake_int8_per_token(x)
        if not torch.is_grad_enabled():
            return F.linear(x, self.fake_weight(), self.bias)
        return _FakeLinear.apply(x, self.weight, self)

    def convert(self) -> nn.Module:
        lin = nn.Linear(self.weight.shape[1], self.weight.shape[0], bias=self.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(self.latent())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        if self.scheme == "int4-weight":
            return Int4WeightLinear.from_float(lin, self.group_size, symmetric=self.symmetric)
        return (Int8DynamicLinear if self.scheme == "int8-dynamic" else Int8WeightLinear).from_float(lin)


class _FakeLinear(torch.autograd.Function):
    """``F.linear(x, layer.fake_weight())`` with the straight-through gradient, saving only ``x`` for the
    backward pass: the fake-quantized weight is recomputed there from the latent one instead of being held
    from forward to backward (one fp32 copy of every trained weight less at the peak: 1.4 GB for a 0.5B
    model)."""

    @staticmethod
    def forward(ctx, x, weight, layer):
        with torch.no_grad():
            y = F.linear(x, layer.fake_weight(), layer.bias)
        ctx.save_for_backward(x)
        ctx.layer = layer
        return y

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        layer = ctx.layer
        with torch.no_grad():
            w = layer.fake_weight()
            grad_x = grad @ w if ctx.needs_input_grad[0] else None
            grad_w = grad.reshape(-1, grad.shape[-1]).T @ x.reshape(-1, x.shape[-1])
            if layer.mask is not None:
                grad_w = grad_w * layer.mask  # the latent is weight * mask
        return grad_x, grad_w, None


class FakeTiedTable(nn.Module):
    """A tied table (`QuantEmbedding.tied`) while its head trains: rows come from the head's fake-quantized
    weight, so the lookup and the projection train as the one matrix they are and convert to it."""

    def __init__(self, head: FakeQuantLinear, table: QuantEmbedding):
        super().__init__()
        self.__dict__["_head"] = (head,)  # not a submodule: the head is trained (and counted) once
        self.tied_to, self.padding_idx, self.embed_scale = table.tied_to, table.padding_idx, table.embed_scale
        self.num_embeddings, self.embedding_dim = table.num_embeddings, table.embedding_dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.__dict__["_head"][0].fake_weight())
        return rows * self.embed_scale if self.embed_scale != 1.0 else rows


@dataclass
class Checkpoints:
    """Where `kd_train` keeps its checkpoints: ``directory``, every ``every`` steps (0: it only resumes);
    ``key``: what the run depends on (config, data), compared on resume. ``max_seconds``: the time budget of
    this call; past it, training stops at the next step boundary and writes a checkpoint. Set by `kd_train`:
    ``resumed_from`` (the step it continued from) and ``out_of_time`` (the step the budget stopped it at)."""

    directory: Path
    every: int
    key: dict
    max_seconds: float | None = None
    resumed_from: int | None = None
    out_of_time: int | None = None


def kd_train(student: nn.Module, teacher: nn.Module, rows: torch.Tensor, steps: int, lr: float, batch_size: int,
             temperature: float = 1.0, seed: int = 0, progress=None, guard=None,
             checkpoints: Checkpoints | None = None) -> list[float]:
    """Distil ``teacher`` into ``student`` on random batches of ``rows``; returns the loss per step.

    ``guard``: a `slimlm.distill.guard.DivergenceGuard`; when it fires, training stops before that step's
    update (its ``reason`` says why). ``checkpoints``: the trained weights, AdamW's state, the batch sampler's
    state, the losses and the guard's state go to ``checkpoints.directory`` every ``checkpoints.every`` steps
    (`slimlm.distill.checkpoint`: atomic, read back without unpickling code); when one is there, training
    continues from it, exactly as if it had not stopped. Past ``checkpoints.max_seconds`` it writes one and stops
    (``checkpoints.out_of_time``); the losses so far are returned."""
    progress = or_noop(progress)
    t0 = time.perf_counter()
    named = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    opt = adamw(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    loss_fn = _kd_from_hidden(student, teacher, temperature) or _kd_from_logits(student, teacher, temperature)
    losses: list[float] = []
    start = _resume(checkpoints, named, opt, g, losses, guard) if checkpoints is not None else 0
    for step in range(start, steps):
        x = rows[torch.randint(0, rows.shape[0], (min(batch_size, rows.shape[0]),), generator=g)]
        loss = loss_fn(x)
        losses.append(loss.item())
        if guard is not None and guard.update(losses[-1]):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        done = step + 1
        if checkpoints is not None and done < steps:
            late = checkpoints.max_seconds is not None and time.perf_counter() - t0 >= checkpoints.max_seconds
            if late or (checkpoints.every and done % checkpoints.every == 0):
                _save(checkpoints, named, opt, g, losses, guard, done)
            checkpoints.out_of_time = done if late else None
        progress("qat", done, steps)
        if checkpoints is not None and checkpoints.out_of_time is not None:
            break
    return losses


def _save(ck: Checkpoints, named, opt, g: torch.Generator, losses: list[float], guard, step: int) -> None:
    state = {"model": {n: p.detach() for n, p in named}, "optimizer": opt.state_dict(), "scheduler": {},
             "rng": g.get_state()}
    meta = {"step": step, "tokens": 0, "config": ck.key, "history": losses, "eval_curve": [],
            "best": {"guard_best": guard.best if guard is not None else None,
                     "guard_recent": guard.recent if guard is not None else []}}
    save_checkpoint(ck.directory, state, meta)


def _resume(ck: Checkpoints, named, opt, g: torch.Generator, losses: list[float], guard) -> int:
    """Load ``ck``'s checkpoint into the run if there is one; returns the step to start from."""
    from slimlm.errors import ConfigError

    if not has_checkpoint(ck.directory):
        return 0
    state, meta = load_checkpoint(ck.directory)
    if meta["config"] != ck.key:
        diff = sorted(k for k in set(meta["config"]) | set(ck.key) if meta["config"].get(k) != ck.key.get(k))
        raise ConfigError(f"the QAT checkpoint in {ck.directory} was written with different settings "
                          f"({', '.join(diff)}); resume with the same options and data, or delete it to start over.")
    try:
        with torch.no_grad():
            for n, p in named:
                p.copy_(state["model"][n])
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["rng"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"the QAT checkpoint in {ck.directory} does not fit this model "
                          f"({str(exc).splitlines()[0][:120]}); delete it to start over.") from None
    losses.extend(meta["history"])
    if guard is not None and meta["best"].get("guard_best") is not None:
        guard.best, guard.recent = meta["best"]["guard_best"], list(meta["best"]["guard_recent"])
    ck.resumed_from = meta["step"]
    return meta["step"]


def _kd_from_logits(student: nn.Module, teacher: nn.Module, temperature: float):
    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_logits = teacher(x).logits
        return kd_loss(student(x).logits, t_logits, temperature=temperature)  # chunked for a large vocabulary

    return fn


def _kd_from_hidden(student: nn.Module, teacher: nn.Module, temperature: float):
    """The KD loss from both models' final hidden states a chunk of positions at a time
    (`slimlm.distill.losses.head_loss`: no whole-vocabulary logits), for a decoder of a family slimlm knows;
    None otherwise."""
    from slimlm.errors import UnsupportedModelError
    from slimlm.models.adapters import adapter_for

    try:
        s, t = adapter_for(student), adapter_for(teacher)
    except UnsupportedModelError:
        return None
    if not s.causal or s.lm_head() is None or t.lm_head() is None:
        return None

    trained = [p for p in s.lm_head().parameters() if p.requires_grad]  # the head's, if QAT trains it

    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            h_t = t.base()(input_ids=x, use_cache=False).last_hidden_state
        h_s = s.base()(input_ids=x, use_cache=False).last_hidden_state
        return head_loss(h_s, s.head_logits, trained, h_t=h_t, head_t=t.head_logits, temperature=temperature)[0]

    return fn


def qat_(model, config: QATConfig, calib: torch.Tensor | None, progress=None, checkpoint_dir=None,
         max_seconds: float | None = None) -> dict:
    """QAT in place (see the module docstring); the report's ``qat`` says what it did. With ``max_seconds``
    (which needs ``checkpoint_dir``) training stops at the first step past it and writes its checkpoint: the
    report's ``qat.out_of_time`` is that step, and the model is left half-trained, to be discarded; the same
    call with the same ``checkpoint_dir`` continues it."""
    from slimlm.errors import ConfigError
    from slimlm.quantize.api import split_calib

    if calib is None:
        raise ConfigError("QAT needs training data for distillation; pass --data.")
    if max_seconds is not None and checkpoint_dir is None:
        raise ConfigError("a QAT time budget needs a checkpoint directory to stop into.")
    start = time.perf_counter()
    hf = getattr(model, "hf", model)
    rows, holdout = split_calib(calib, config.holdout)
    base = lm_loss(hf, holdout)  # the fp32 model, before anything changes
    teacher = copy.deepcopy(hf).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    # a large teacher keeps its weights in bfloat16 while it distils (computing in float32), as in slimlm.distill
    with teacher_precision(teacher, resolve("auto", sum(p.numel() for p in teacher.parameters()))) as tp:
        return _qat(hf, teacher, tp["precision"], config, rows, holdout, base, start, progress, checkpoint_dir,
                    max_seconds)


def _qat(hf, teacher, teacher_dtype: str, config: QATConfig, rows, holdout, base: float, start: float,
         progress, checkpoint_dir=None, max_seconds: float | None = None) -> dict:
    """`qat_` with its teacher ready (its weights in ``teacher_dtype``); ``base``: the fp32 held-out loss."""
    from slimlm.quantize.api import ptq_

    target = config.target
    ptq = ptq_(hf, target, rows, progress)
    before = math.exp(lm_loss(hf, holdout) - base)
    report = {"scheme": "qat", "target": target.scheme, "quantized": ptq["quantized"],
              "fp32_layers": ptq["fp32_layers"], "qat": {"ppl_ratio_ptq": before, "teacher_precision": teacher_dtype}}
    for key in ("fallback", "int8_layers", "tied"):
        if key in ptq:
            report[key] = ptq[key]
    if config.only_if_drop_above is not None and before - 1 <= config.only_if_drop_above:
        report["qat"].update(trained=False, reason=f"PTQ drop {before - 1:.4f} is within {config.only_if_drop_above}")
        report["seconds"] = time.perf_counter() - start
        return report
    # prepare
    group = target.group_size if isinstance(target, Int4WeightConfig) else 0
    symmetric = isinstance(target, Int4WeightConfig) and target.symmetric
    for p in hf.parameters():
        p.requires_grad_(False)
    fakes = {}
    for name, m in list(hf.named_modules()):
        if isinstance(m, QuantLinear):  # a layer the per-layer fallback put in int8 trains as int8
            own = "int8-weight" if isinstance(m, Int8WeightLinear) and target.scheme != "int8-weight" else target.scheme
            fakes[name] = FakeQuantLinear(float_weight(m), m.bias, own, group if own == target.scheme else 0, symmetric)
    ptq_layers = {name: hf.get_submodule(name) for name in fakes}  # kept (packed) in case QAT ends worse
    for name, f in fakes.items():
        set_module(hf, name, f)
    tables = {name: FakeTiedTable(fakes[m.tied_to], m) for name, m in list(hf.named_modules())
              if isinstance(m, QuantEmbedding) and m.tied_to in fakes}
    for name, t in tables.items():
        set_module(hf, name, t)
    # train
    trained = sum(p.numel() for f in fakes.values() for p in f.parameters())
    lr = config.lr if config.lr is not None else config.default_lr(trained)
    guard = DivergenceGuard(DIVERGENCE_FACTOR)
    checkpoints = None
    if checkpoint_dir is not None:  # the run depends on these: a checkpoint of another run is refused
        data = hashlib.sha256(rows.cpu().numpy().tobytes()).hexdigest()[:16]
        checkpoints = Checkpoints(Path(checkpoint_dir), config.checkpoint_every,
                                  {"qat": config.model_dump(mode="json", exclude=set(RESUME_MAY_CHANGE)), "lr": lr,
                                   "data": data}, max_seconds=max_seconds)
    with recompute_in_eval_mode(hf, config.gradient_checkpointing):
        losses = kd_train(hf, teacher, rows, config.steps, lr, config.batch_size, config.temperature,
                          progress=progress, guard=guard, checkpoints=checkpoints)
    if checkpoints is not None and checkpoints.resumed_from is not None:
        report["qat"]["resumed_from"] = checkpoints.resumed_from
    if checkpoints is not None and checkpoints.out_of_time is not None:  # nothing converted: the job keeps no model
        report["qat"].update(trained=False, steps=config.steps, out_of_time=checkpoints.out_of_time)
        report["seconds"] = time.perf_counter() - start
        return report
    # convert
    with torch.no_grad():
        changed = total = 0
        for name, f in fakes.items():
            q = f.convert()
            set_module(hf, name, q)
            changed += int((float_weight(q) != float_weight(ptq_layers[name])).sum())
            total += q.in_features * q.out_features
        _relink(hf, tables)  # the table is the converted head's weight again
    hf.eval()
    after = math.exp(lm_loss(hf, holdout) - base)
    if guard.reason:
        report["qat"]["diverged"] = f"stopped after {len(losses) - 1} of {config.steps} steps: {guard.reason}"
    report["qat"].update(trained=True, steps=config.steps, lr=lr, kd_loss_first=losses[0], kd_loss_last=losses[-1],
                         ppl_ratio_after=after, changed_weights=changed / max(total, 1))
    if after >= before:  # no better than PTQ on the held-out rows: say so, and keep PTQ's layers if QAT is worse
        kept = after > before
        if kept:
            for name, m in ptq_layers.items():
                set_module(hf, name, m)
            _relink(hf, tables)
            report["qat"]["kept"] = "ptq"
        report["qat"]["warning"] = (
            f"QAT did not improve on PTQ (held-out perplexity x{after:.4f} against x{before:.4f} after "
            f"{config.steps} steps at lr {lr:g}{'; the PTQ weights are kept' if kept else ''}): raise the learning "
            "rate or the steps, or leave QAT out")
    report["seconds"] = time.perf_counter() - start
    return report


def _relink(hf: nn.Module, tables: dict[str, FakeTiedTable]) -> None:
    """Each tied table becomes the quantized table of the layer now at its ``tied_to``."""
    for name, t in tables.items():
        set_module(hf, name, tie_table(hf.get_submodule(t.tied_to), t.tied_to, t.padding_idx, t.embed_scale))
