"""Defaults that hold on larger models: lr / warm-up scaled by size, a divergence guard that restores the
weights, and the KL over a large vocabulary computed in checkpointed chunks with the same value and gradient."""

import torch

from slimlm._io import cache_dir
from slimlm.distill import DistillConfig, distill_run
from slimlm.distill.guard import DivergenceGuard, scale_for_size
from slimlm.distill.losses import kl as klmod
from slimlm.models import load


def test_lr_and_warmup_scale_down_for_a_larger_model_only():
    cfg = DistillConfig(steps=100, lr=3e-4)
    big = scale_for_size(cfg, 540_000_000)
    assert big.lr == cfg.lr * 0.5 and big.warmup_steps == 5
    assert scale_for_size(cfg, 100_000_000) is cfg
    literal = cfg.model_copy(update={"lr_scaling": "none"})
    assert scale_for_size(literal, 540_000_000) is literal


def test_guard_trips_on_a_rising_or_non_finite_loss():
    g = DivergenceGuard(3.0, window=2)
    assert not any(g.update(x) for x in (4.0, 3.0, 2.0, 2.0, 3.0))
    assert g.update(20.0) and "rose above" in g.reason
    assert DivergenceGuard(3.0).update(float("nan"))


def test_a_diverging_run_stops_and_restores_the_starting_weights(teacher, corpus):
    student = load("tiny:llama?layers=2&hidden=32&heads=2&kv_heads=1&ffn=64&seed=1")
    before = {k: v.clone() for k, v in student.hf.state_dict().items()}
    res = distill_run(student, teacher, corpus, DistillConfig(steps=40, lr=30.0, clip=0, seq_len=64, batch_size=2))
    assert res.diverged and "restored the weights it started from" in res.diverged
    assert res.steps < 40
    assert all(torch.equal(before[k], v) for k, v in student.hf.state_dict().items())
    assert not list(cache_dir("weights-stash").iterdir())  # the starting weights waited on disk, removed after


def test_the_starting_weights_wait_on_disk_and_go_once_the_run_ends(teacher, corpus, monkeypatch):
    from slimlm.distill import guard

    seen = []
    real = guard.WeightsOnDisk.__init__

    def spy(self, module):
        real(self, module)
        seen.append((self.path.exists(), self.path.stat().st_size, self.dir))

    monkeypatch.setattr(guard.WeightsOnDisk, "__init__", spy)
    student = load("tiny:llama?layers=2&hidden=32&heads=2&kv_heads=1&ffn=64&seed=1")
    distill_run(student, teacher, corpus, DistillConfig(steps=2, seq_len=32, batch_size=2))
    weights = sum(p.numel() * p.element_size() for p in student.hf.parameters())  # tied: counted once
    assert len(seen) == 1 and seen[0][0] and seen[0][1] >= weights
    assert not seen[0][2].exists()
    distill_run(student, teacher, corpus, DistillConfig(steps=2, seq_len=32, batch_size=2, divergence_factor=0))
    assert len(seen) == 1  # no guard, no copy


def test_chunked_kd_loss_matches_the_full_computation(monkeypatch):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 7, 50, generator=g, requires_grad=True)
    t = torch.randn(2, 7, 50, generator=g)
    for direction in ("forward", "reverse", "jsd"):
        full = klmod.kd_loss(s, t, temperature=2.0, direction=direction)
        (gf,) = torch.autograd.grad(full, s)
        monkeypatch.setattr(klmod, "CHUNK_ELEMENTS", 3 * 50)  # 3 positions per chunk
        part = klmod.kd_loss(s, t, temperature=2.0, direction=direction)
        (gp,) = torch.autograd.grad(part, s)
        monkeypatch.setattr(klmod, "CHUNK_ELEMENTS", 1 << 24)
        torch.testing.assert_close(part, full)
        torch.testing.assert_close(gp, gf)


def test_the_cli_says_when_a_run_diverged_and_which_weights_it_kept(tmp_path, capsys, text_file):
    from slimlm.cli.main import main

    student = "tiny:llama?layers=2&hidden=32&heads=2&kv_heads=1&ffn=64&seed=1"
    capsys.readouterr()
    assert main(["distill", student, "--teacher", "tiny:llama", "--data", str(text_file), "--steps", "30",
                 "--lr", "30", "--seq-len", "16", "--batch-size", "2", "--out", str(tmp_path / "s")]) == 0
    said = capsys.readouterr().out
    assert "diverged:" in said and "restored the weights it started from" in said and "--lr" in said
