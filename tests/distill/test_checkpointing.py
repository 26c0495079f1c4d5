"""Activation checkpointing (``gradient_checkpointing``): the same loss and gradients, fewer activations kept
for the backward pass, and the model handed back as it came."""

import pytest
import torch

from slimlm.distill import DistillConfig, distill_run
from slimlm.distill.recompute import turn_off
from slimlm.distill.trainer import _checkpointing, _Step
from slimlm.errors import ConfigError
from slimlm.models import load


def _saved_bytes(step, rows, inputs, weights):
    total = [0]

    def pack(t):
        if t.data_ptr() not in weights:
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = step(rows, inputs)
    return loss, total[0]


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_checkpointing_keeps_the_gradients_and_saves_fewer_activations(arch):
    teacher = load(f"tiny:{arch}?layers=4")
    student = load(f"tiny:{arch}?layers=4&seed=1")
    ids = torch.randint(4, 250, (2, 32), generator=torch.Generator().manual_seed(0))
    rows, inputs = torch.arange(2), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    weights = {p.data_ptr() for m in (teacher, student) for p in m.hf.parameters()}
    out = {}
    for on in (False, True):
        cfg = DistillConfig(seq_len=32, gradient_checkpointing=on, alpha=0.5)
        turned_on = _checkpointing(student, cfg)
        assert turned_on == on
        student.hf.train()
        student.hf.zero_grad(set_to_none=True)
        loss, saved = _saved_bytes(_Step(student, teacher, cfg, "causal-lm", 0), rows, inputs, weights)
        loss.backward()
        out[on] = (loss.item(), saved, {n: p.grad.clone() for n, p in student.hf.named_parameters()})
        if turned_on:
            turn_off(student.hf)
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-6)
    assert out[True][1] < 0.6 * out[False][1]  # only the blocks' inputs are kept
    for name, g in out[False][2].items():
        torch.testing.assert_close(out[True][2][name], g, rtol=1e-5, atol=1e-7, msg=name)


def test_a_run_with_checkpointing_trains_and_turns_it_off_afterwards(teacher, corpus):
    student = load("tiny:llama?layers=2&hidden=32&heads=2&kv_heads=1&ffn=64&seed=1")
    before = {k: v.clone() for k, v in student.hf.state_dict().items()}
    res = distill_run(student, teacher, corpus, DistillConfig(steps=2, seq_len=32, batch_size=2,
                                                              gradient_checkpointing=True, freeze_embeddings=True))
    assert res.steps == 2 and not student.hf.is_activation_checkpointing
    after = student.hf.state_dict()
    assert not torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])


def test_a_model_without_checkpointing_support_is_refused(monkeypatch):
    student = load("tiny:llama?layers=2")
    monkeypatch.setattr(type(student.hf), "supports_gradient_checkpointing", False)
    with pytest.raises(ConfigError, match="does not support gradient checkpointing"):
        _checkpointing(student, DistillConfig(gradient_checkpointing=True))
