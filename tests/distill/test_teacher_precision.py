"""The teacher in bfloat16 weight storage while it distils: half the bytes, float32 logits, restored exactly."""

import copy

import pytest
import torch
from torch import nn

from slimlm.distill import DistillConfig, distill_run
from slimlm.distill.teacher import AUTO_PARAMS, resolve, teacher_precision
from slimlm.models import Model, load

ARCHS = ["llama", "qwen2", "qwen3", "gemma2", "gemma3", "mistral", "phi3", "bert?labels=3"]


def _weight_bytes(hf):
    seen, total = set(), 0
    for m in hf.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            total += m.weight.numel() * m.weight.element_size()
    return total


@pytest.mark.parametrize("arch", ARCHS)
def test_bfloat16_storage_halves_the_weights_keeps_logits_close_and_restores_the_teacher_bit_for_bit(arch):
    model = load(f"tiny:{arch}")
    hf = model.hf.eval()
    ids = torch.randint(3, 200, (2, 24))
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    bytes_before = _weight_bytes(hf)
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
        with teacher_precision(hf, "bfloat16") as info:
            assert info["precision"] == "bfloat16"
            assert _weight_bytes(hf) == bytes_before // 2
            assert info["bytes_saved"] == bytes_before // 2
            low = hf(input_ids=ids).logits
        again = hf(input_ids=ids).logits
    assert low.dtype == torch.float32
    err = (low - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.03, f"{arch}: bfloat16 weights moved the logits by {err:.4f} of their range"
    assert torch.equal(again, ref)  # float32 weights and the class's own forward are back
    after = hf.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_the_teacher_is_restored_when_the_block_raises():
    hf = load("tiny:qwen2").hf
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"), teacher_precision(hf, "bfloat16"):
        raise RuntimeError("boom")
    assert all(torch.equal(hf.state_dict()[k], v) for k, v in before.items())
    assert all("forward" not in m.__dict__ for m in hf.modules())


def test_auto_reduces_large_teachers_only():
    assert resolve("auto", AUTO_PARAMS - 1) == "float32"
    assert resolve("auto", 494_000_000) == "bfloat16"
    assert resolve("float32", 10**10) == "float32"
    assert resolve("bfloat16", 10) == "bfloat16"


def test_distilling_from_a_bfloat16_teacher_learns_and_leaves_the_teacher_as_it_came(teacher, corpus):
    student = Model(hf=copy.deepcopy(teacher.hf), tokenizer=teacher.tokenizer, spec="tiny-student",
                    provenance={"spec": "tiny-student", "stages": []})
    with torch.no_grad():
        for p in student.hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    t_before = {k: v.clone() for k, v in teacher.hf.state_dict().items()}
    cfg = DistillConfig(steps=8, lr=3e-3, seq_len=64, batch_size=2, teacher_precision="bfloat16")
    res = distill_run(student, teacher, corpus, cfg)
    assert res.teacher_precision == "bfloat16"
    assert res.summary()["teacher_precision"] == "bfloat16"
    first, last = res.history[0]["kd"], res.history[-1]["kd"]
    assert last < first
    assert all(torch.equal(teacher.hf.state_dict()[k], v) for k, v in t_before.items())
    # the default leaves a tiny teacher in float32
    res = distill_run(student, teacher, corpus, DistillConfig(steps=1, seq_len=64, batch_size=2))
    assert res.teacher_precision == "float32"


def test_the_stash_lives_in_slimlms_cache_and_a_dead_runs_stash_is_swept(tmp_path, monkeypatch):
    import os

    from slimlm._io import _HOST, cache_dir

    monkeypatch.setenv("SLIMLM_CACHE", str(tmp_path))
    root = cache_dir("teacher-stash")
    dead = root / f".stash.slimlm-tmp-{_HOST}-999999999-abcd1234"  # a killed run's (no such process)
    dead.mkdir()
    hf = load("tiny:llama").hf
    with teacher_precision(hf, "bfloat16"):
        live = list(root.iterdir())
        assert len(live) == 1 and str(os.getpid()) in live[0].name and any(live[0].iterdir())
    assert list(root.iterdir()) == []  # the dead run's stash was swept, this run's removed
