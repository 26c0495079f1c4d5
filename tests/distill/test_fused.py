"""KD / CE from final hidden states, chunk by chunk (slimlm.distill.losses.fused): the same values and
gradients as the losses on whole-vocabulary logits, in the trainer on every decoder family, and no
whole-vocabulary tensor kept for the backward pass."""

import pytest
import torch
from torch import nn

from slimlm.distill import DistillConfig
from slimlm.distill.losses import causal_ce, head_loss, kd_loss, teacher_topk, topk_kd_loss
from slimlm.distill.trainer import _Step
from slimlm.models import load

ARCHS = ["llama", "qwen2", "qwen3", "gemma2", "gemma3", "mistral", "phi3"]


def _reference(h_s, w_s, h_t, w_t, ids, *, kd_weight, ce_weight, T, direction, teacher_ids=None, cap=None):
    s = h_s @ w_s.T
    t = h_t @ w_t.T
    if cap:
        s, t = torch.tanh(s / cap) * cap, torch.tanh(t / cap) * cap
    if teacher_ids is not None:
        t = t.index_select(-1, teacher_ids)
    loss = 0
    if kd_weight:
        loss = loss + kd_weight * kd_loss(s, t, temperature=T, direction=direction, beta=0.3)
    if ce_weight:
        loss = loss + ce_weight * causal_ce(s, ids)
    return loss


@pytest.mark.parametrize("direction", ["forward", "reverse", "jsd"])
@pytest.mark.parametrize(("kd_weight", "ce_weight", "T"), [(1.0, 0.0, 1.0), (0.7, 0.3, 2.0), (0.0, 1.0, 1.0)])
@pytest.mark.parametrize("trimmed", [False, True])
def test_head_loss_equals_the_loss_on_whole_logits_with_its_gradients(direction, kd_weight, ce_weight, T, trimmed):
    g = torch.Generator().manual_seed(0)
    B, L, H, V = 3, 7, 16, 53
    h_s = torch.randn(B, L, H, generator=g, requires_grad=True)
    h_t = torch.randn(B, L, H, generator=g)
    w_s = nn.Parameter(torch.randn(V if not trimmed else 29, H, generator=g))
    w_t = torch.randn(V, H, generator=g) * 2
    teacher_ids = torch.randperm(V, generator=g)[:29] if trimmed else None
    ids = torch.randint(0, w_s.shape[0], (B, L), generator=g)
    cap = 5.0 if direction == "jsd" else None  # a soft-capped head (Gemma) on one of the paths

    def head_s(x):
        y = x @ w_s.T
        return torch.tanh(y / cap) * cap if cap else y

    def head_t(x):
        y = x @ w_t.T
        return torch.tanh(y / cap) * cap if cap else y

    ref = _reference(h_s, w_s, h_t, w_t, ids, kd_weight=kd_weight, ce_weight=ce_weight, T=T,
                     direction=direction, teacher_ids=teacher_ids, cap=cap)
    ref_gh, ref_gw = torch.autograd.grad(ref, [h_s, w_s])
    # 5 x 53 logits a chunk: 21 positions in 5 chunks, the last one short
    loss, parts = head_loss(h_s, head_s, [w_s], h_t=h_t, head_t=head_t, teacher_ids=teacher_ids, input_ids=ids,
                            kd_weight=kd_weight, ce_weight=ce_weight, temperature=T, direction=direction, beta=0.3,
                            chunk_elements=5 * w_s.shape[0])
    gh, gw = torch.autograd.grad(loss * 3.0, [h_s, w_s])  # the incoming gradient scales both
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(gh, 3.0 * ref_gh, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gw, 3.0 * ref_gw, rtol=1e-4, atol=1e-6)
    assert set(parts) == ({"kd"} if kd_weight else set()) | ({"ce"} if ce_weight else set())


@pytest.mark.parametrize("given", [False, True])
def test_topk_kd_from_hidden_states_equals_topk_kd_on_whole_logits(given):
    g = torch.Generator().manual_seed(2)
    B, L, H, V, k = 2, 9, 16, 41, 5
    h_s = torch.randn(B, L, H, generator=g, requires_grad=True)
    h_t = torch.randn(B, L, H, generator=g)
    w_s, w_t = nn.Parameter(torch.randn(V, H, generator=g)), torch.randn(V, H, generator=g) * 2
    ids = torch.randint(0, V, (B, L), generator=g)
    top = teacher_topk(h_t @ w_t.T, k)
    ref = 0.6 * topk_kd_loss(h_s @ w_s.T, *top, temperature=2.0) + 0.4 * causal_ce(h_s @ w_s.T, ids)
    ref_gh, ref_gw = torch.autograd.grad(ref, [h_s, w_s])
    loss, parts = head_loss(h_s, lambda x: x @ w_s.T, [w_s], h_t=None if given else h_t,
                            head_t=None if given else (lambda x: x @ w_t.T), teacher_topk=top if given else None,
                            input_ids=ids, kd_weight=0.6, ce_weight=0.4, temperature=2.0, direction="topk", top_k=k,
                            chunk_elements=4 * V)
    gh, gw = torch.autograd.grad(loss, [h_s, w_s])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(gh, ref_gh, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gw, ref_gw, rtol=1e-4, atol=1e-6)
    if given:
        assert "teacher_topk" not in parts
    else:  # the teacher's top-k, computed chunk by chunk, for the cache
        torch.testing.assert_close(parts["teacher_topk"][0], top[0])
        assert torch.equal(parts["teacher_topk"][1], top[1])


def test_a_frozen_head_gets_no_gradient_and_the_hidden_states_still_do():
    g = torch.Generator().manual_seed(1)
    h_s, w = torch.randn(2, 5, 8, generator=g, requires_grad=True), torch.randn(11, 8, generator=g)
    ids = torch.randint(0, 11, (2, 5), generator=g)
    loss, _ = head_loss(h_s, lambda x: x @ w.T, [], input_ids=ids, kd_weight=0.0, ce_weight=1.0, chunk_elements=33)
    loss.backward()
    ref_h = h_s.detach().clone().requires_grad_()
    causal_ce(ref_h @ w.T, ids).backward()
    torch.testing.assert_close(h_s.grad, ref_h.grad, rtol=1e-4, atol=1e-7)


def test_head_loss_refuses_what_it_cannot_compute():
    h = torch.randn(1, 3, 4)
    with pytest.raises(ValueError, match="kd_weight or ce_weight"):
        head_loss(h, lambda x: x, kd_weight=0.0, ce_weight=0.0)
    with pytest.raises(ValueError, match="teacher"):
        head_loss(h, lambda x: x, kd_weight=1.0)
    with pytest.raises(ValueError, match="input_ids"):
        head_loss(h, lambda x: x, kd_weight=0.0, ce_weight=1.0)


def _batch(model, B=2, L=16, seed=0):
    ids = torch.randint(4, 250, (B, L), generator=torch.Generator().manual_seed(seed))
    return torch.arange(B), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _grads(model):
    return {n: p.grad.clone() for n, p in model.hf.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tied", [0, 1])
def test_trainer_step_from_hidden_states_equals_the_logits_step_on_every_family(arch, tied):
    teacher = load(f"tiny:{arch}?layers=3&tied={tied}")
    student = load(f"tiny:{arch}?layers=2&tied={tied}&seed=1")
    loss = {"gemma2": "jsd", "mistral": "topk", "phi3": "reverse-kl"}.get(arch, "kl")
    cfg = DistillConfig(loss=loss, alpha=0.25, temperature=2.0, seq_len=16, top_k=8,
                        hidden_weight=0.5 if arch == "qwen3" else 0.0)
    step = _Step(student, teacher, cfg, "causal-lm", 0)
    assert step.fused
    rows, inputs = _batch(student)
    out = {}
    for fused in (True, False):
        step.fused = fused
        student.hf.zero_grad(set_to_none=True)
        loss, parts = step(rows, inputs)
        loss.backward()
        out[fused] = (loss.item(), parts, _grads(student))
    (l1, p1, g1), (l0, p0, g0) = out[True], out[False]
    assert l1 == pytest.approx(l0, rel=1e-5)
    assert p1.keys() == p0.keys() and all(p1[k] == pytest.approx(p0[k], rel=1e-5) for k in p0)
    assert g1.keys() == g0.keys() and len(g1) > 5
    head = "model.embed_tokens.weight" if tied else "lm_head.weight"
    assert head in g1  # the head trains through the fused path
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_vocabulary_trimmed_student_reads_the_teachers_logits_of_its_own_tokens():
    from slimlm.distill.trainer import teacher_vocab_map

    teacher = load("tiny:llama?layers=3&tied=0")
    student = load("tiny:llama?layers=2&tied=0&seed=1")
    keep = list(range(0, 256, 3))  # every third token, renumbered 0..85
    with torch.no_grad():
        head = nn.Linear(student.adapter.hidden_size, len(keep), bias=False)
        head.weight.copy_(student.hf.lm_head.weight[keep])
        emb = nn.Embedding(len(keep), student.adapter.hidden_size)
        emb.weight.copy_(student.hf.model.embed_tokens.weight[keep])
    student.hf.lm_head, student.hf.model.embed_tokens = head, emb
    student.hf.config.vocab_size = len(keep)
    student.provenance["vocab_map"] = keep
    assert teacher_vocab_map(student, teacher) is not None
    step = _Step(student, teacher, DistillConfig(seq_len=16), "causal-lm", 0)
    ids = torch.randint(0, len(keep), (2, 16), generator=torch.Generator().manual_seed(3))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    losses = {}
    for fused in (True, False):
        step.fused = fused
        student.hf.zero_grad(set_to_none=True)
        loss, _ = step(torch.arange(2), inputs)
        loss.backward()
        losses[fused] = (loss.item(), student.hf.lm_head.weight.grad.clone())
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-5)
    torch.testing.assert_close(losses[True][1], losses[False][1], rtol=1e-4, atol=1e-6)


def test_no_whole_vocabulary_tensor_is_kept_for_the_backward_pass(monkeypatch):
    # a 4,096-token vocabulary (the tiny models' head is widened), 4 positions a chunk: the logits path keeps
    # (B, T, V) tensors for the backward pass; the fused path saves at most one chunk's logits at a time (inside
    # its forward, for that chunk's own gradient)
    from slimlm.distill.losses import fused as fused_module

    monkeypatch.setattr(fused_module, "CHUNK_ELEMENTS", 4 * 4096)
    teacher, student = load("tiny:llama?layers=2&tied=0"), load("tiny:llama?layers=2&tied=0&seed=1")
    V, B, L = 4096, 2, 32
    for m in (teacher, student):
        m.hf.lm_head = nn.Linear(m.adapter.hidden_size, V, bias=False)
    step = _Step(student, teacher, DistillConfig(seq_len=L, alpha=0.5), "causal-lm", 0)
    rows, inputs = _batch(student, B, L)
    largest = {}
    weights = {p.data_ptr() for m in (teacher, student) for p in m.hf.parameters()}
    for fused in (True, False):
        step.fused = fused
        sizes = []

        def pack(t, sizes=sizes):
            if t.data_ptr() not in weights:  # activations, not the layers' own weights
                sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss, _ = step(rows, inputs)
        loss.backward()
        largest[fused] = max(sizes)
    assert largest[False] >= B * L * V  # the check sees the logits when they are kept
    assert largest[True] <= 4 * V
