"""KD and next-token losses from final hidden states, a chunk of positions at a time, without the
whole-vocabulary logits.

A causal LM's logits are ``head(h)``: (B, T, V) floats, 0.6 GB in float32 for a 150k vocabulary at 4 x 256
positions. A KD + CE loss over them keeps several such tensors alive until the backward pass: the student's
and the teacher's logits, the log-softmaxes, the CE's shifted copy, the gradient. `head_loss` takes the final
hidden states (B, T, H) instead. For each chunk of positions it computes both heads' logits and the loss, and
at once the gradient with respect to the chunk's hidden states and the student head's parameters
(``torch.autograd.grad`` on that chunk alone); the backward pass only scales those gradients by the incoming
one. So one chunk's logits exist at a time and nothing is computed twice: the arithmetic is the unchunked
loss's in another order (values and gradients equal it to float32 rounding; tested).

It is the idea of fused linear cross-entropy kernels, in plain PyTorch, so it runs on any device and with any
head module: a plain Linear, a vocabulary-trimmed one, a fake-quantized one (QAT), Gemma's soft-capped one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from slimlm.distill.losses.kl import Direction, divergence_per_position
from slimlm.distill.losses.topk import topk_per_position

#: logits elements per chunk (positions x vocabulary): 64 MB in float32, so a 150k vocabulary goes 110
#: positions at a time and a 49k one 341; the chunk's log-softmaxes and gradient are a few times that
CHUNK_ELEMENTS = 1 << 24

Head = Callable[[torch.Tensor], torch.Tensor]  # (n, H) hidden states -> (n, V) logits


@dataclass(frozen=True)
class _Spec:
    head_s: Head
    head_t: Head | None
    teacher_ids: torch.Tensor | None
    targets: torch.Tensor | None  # (N,) next-token ids, -100 where there is none
    kd_weight: float
    ce_weight: float
    temperature: float
    direction: str  # forward, reverse, jsd or topk
    beta: float
    rows: int
    top_k: int = 0
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None  # (N, k) values and ids, when given
    topk_out: tuple[torch.Tensor, torch.Tensor] | None = None  # (N, k) buffers the teacher's top-k go to


class _HeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec: _Spec, h_s: torch.Tensor, h_t: torch.Tensor | None, *params: torch.Tensor):
        n = h_s.shape[0]
        T = spec.temperature
        n_ce = int((spec.targets != -100).sum()) if spec.targets is not None else 0
        grad_h = torch.zeros_like(h_s) if h_s.requires_grad else None
        grad_p: list[torch.Tensor | None] = [None] * len(params)
        kd_sum = h_s.new_zeros((), dtype=torch.float32)
        ce_sum = h_s.new_zeros((), dtype=torch.float32)
        for i in range(0, n, spec.rows):
            with torch.enable_grad():
                x = h_s[i:i + spec.rows].detach().requires_grad_(h_s.requires_grad)
                logits = spec.head_s(x)
                total = logits.new_zeros((), dtype=torch.float32)
                if spec.kd_weight:
                    rows = slice(i, i + spec.rows)
                    if spec.teacher_topk is not None:  # top-k KD with the teacher's side given (a cache)
                        t = None
                        values, ids = spec.teacher_topk[0][rows], spec.teacher_topk[1][rows]
                    else:
                        with torch.no_grad():
                            t = spec.head_t(h_t[rows])
                            if spec.teacher_ids is not None:  # a vocabulary-trimmed student: its tokens only
                                t = t.index_select(-1, spec.teacher_ids)
                    if spec.direction == "topk":
                        if t is not None:
                            values, ids = t.detach().float().topk(spec.top_k, dim=-1)
                            spec.topk_out[0][rows], spec.topk_out[1][rows] = values, ids
                        kd = topk_per_position(logits, values, ids, T).sum()
                    else:
                        kd = divergence_per_position(logits, t, T, spec.direction, spec.beta).sum()
                    kd_sum += kd.detach()
                    total = total + kd * (spec.kd_weight * T * T / n)
                if spec.ce_weight and n_ce:
                    ce = F.cross_entropy(logits.float(), spec.targets[i:i + spec.rows], ignore_index=-100,
                                         reduction="sum")
                    ce_sum += ce.detach()
                    total = total + ce * (spec.ce_weight / n_ce)
                wrt = ([x] if x.requires_grad else []) + list(params)
                grads = list(torch.autograd.grad(total, wrt, allow_unused=True)) if wrt and total.requires_grad else []
            if grad_h is not None and grads:
                grad_h[i:i + spec.rows] = grads.pop(0)
            for k, g in enumerate(grads):
                if g is not None:
                    grad_p[k] = g if grad_p[k] is None else grad_p[k].add_(g)
        ctx.grad_h, ctx.grad_p = grad_h, grad_p
        kd_mean = kd_sum * (T * T / n)
        ce_mean = ce_sum / max(n_ce, 1)
        loss = spec.kd_weight * kd_mean + spec.ce_weight * ce_mean
        ctx.mark_non_differentiable(kd_mean, ce_mean)
        return loss, kd_mean, ce_mean

    @staticmethod
    def backward(ctx, g, _g_kd, _g_ce):
        grad_h = None if ctx.grad_h is None else ctx.grad_h * g
        return (None, grad_h, None, *[None if p is None else p * g for p in ctx.grad_p])


def head_loss(
    h_s: torch.Tensor,
    head_s: Head,
    params: Sequence[torch.Tensor] = (),
    *,
    h_t: torch.Tensor | None = None,
    head_t: Head | None = None,
    teacher_ids: torch.Tensor | None = None,
    input_ids: torch.Tensor | None = None,
    kd_weight: float = 1.0,
    ce_weight: float = 0.0,
    temperature: float = 1.0,
    direction: Direction | Literal["topk"] = "forward",
    beta: float = 0.5,
    top_k: int = 64,
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    chunk_elements: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``ce_weight * CE + kd_weight * KD`` of a causal LM, from final hidden states, chunk by chunk.

    Equal (to float32 rounding) to ``ce_weight * causal_ce(logits, input_ids) + kd_weight * kd_loss(logits,
    teacher_logits)`` with ``logits = head_s(h_s)`` and ``teacher_logits = head_t(h_t)`` (restricted to
    ``teacher_ids``), and so are its gradients, but no more than one chunk's logits ever exist.

    Args:
        h_s: the student's final hidden states (B, T, H); gradients flow into them.
        head_s: the student's hidden states -> logits (its LM head, soft-capping included).
        params: the parameters of ``head_s`` that need gradients (a frozen head: none).
        h_t, head_t: the teacher's final hidden states and head; needed when ``kd_weight`` > 0.
        teacher_ids: (V_student,) teacher ids of the student's tokens, for a vocabulary-trimmed student.
        input_ids: (B, T) token ids, the CE's targets shifted by one; needed when ``ce_weight`` > 0.
        kd_weight, ce_weight: the two terms' weights (at least one positive).
        temperature, direction, beta: as in `slimlm.distill.losses.kd_loss`; ``direction="topk"`` is
            `slimlm.distill.losses.topk_kd_loss` against the teacher's ``top_k`` largest logits.
        teacher_topk: for ``topk``, the teacher's (values, ids), each (B, T, k), instead of ``h_t``/``head_t``
            (a cache); without it the teacher's top-k computed here are returned as ``parts["teacher_topk"]``.
        chunk_elements: positions x vocabulary computed at a time (default `CHUNK_ELEMENTS`).

    Returns:
        ``(loss, {"kd": ..., "ce": ...})``: the scalar to backpropagate, and each term (detached; a term with
        weight 0 is absent), plus ``teacher_topk`` when ``topk`` computed them.
    """
    if kd_weight <= 0 and ce_weight <= 0:
        raise ValueError("head_loss needs kd_weight or ce_weight above 0")
    if kd_weight > 0 and (h_t is None or head_t is None) and not (direction == "topk" and teacher_topk is not None):
        raise ValueError("a KD term needs the teacher's hidden states and head")
    if ce_weight > 0 and input_ids is None:
        raise ValueError("a CE term needs input_ids")
    B, T, H = h_s.shape
    targets = None
    if ce_weight > 0:
        targets = torch.full((B, T), -100, dtype=torch.long, device=h_s.device)
        targets[:, :-1] = input_ids[:, 1:]
        targets = targets.reshape(-1)
    with torch.no_grad():  # the vocabulary size, from one position
        vocab = head_s(h_s.detach()[:1, :1].reshape(1, H)).shape[-1]
    given = out = None
    if kd_weight > 0 and direction == "topk":
        if teacher_topk is not None:
            given = tuple(x.reshape(B * T, -1) for x in teacher_topk)
        else:
            out = (torch.empty(B * T, top_k, device=h_s.device), torch.empty(B * T, top_k, dtype=torch.long,
                                                                                device=h_s.device))
    spec = _Spec(head_s, head_t, teacher_ids, targets, float(kd_weight), float(ce_weight), float(temperature),
                 direction, float(beta), max(1, (chunk_elements or CHUNK_ELEMENTS) // vocab), top_k, given, out)
    flat_t = h_t.detach().reshape(B * T, -1) if kd_weight > 0 and given is None else None
    loss, kd, ce = _HeadLoss.apply(spec, h_s.reshape(B * T, H), flat_t, *params)
    parts = {}
    if kd_weight > 0:
        parts["kd"] = kd
    if out is not None:
        parts["teacher_topk"] = tuple(x.reshape(B, T, top_k) for x in out)
    if ce_weight > 0:
        parts["ce"] = ce
    return loss, parts
