"""QAT: fake quantization + distillation lowers the quantized model's loss; the hybrid path can skip it."""

import math

import pytest
import torch

from slimlm.models.qmath import fake_int8_per_token
from slimlm.quantize import Int4WeightConfig, Int8WeightConfig, QATConfig, quantize_
from slimlm.quantize.fallback import lm_loss
from slimlm.quantize.qat import FakeQuantLinear


def test_qat_lowers_quantized_loss(sharp_tiny, calib):
    tiny = sharp_tiny
    cfg = QATConfig(target=Int4WeightConfig(method="rtn", group_size=16), steps=20, batch_size=4, holdout=4)
    report = quantize_(tiny, cfg, calib)
    q = report["qat"]
    assert q["trained"] and q["ppl_ratio_ptq"] > 1.002
    assert q["lr"] == 3e-4 and q["teacher_precision"] == "float32"  # the int4 default
    assert q["changed_weights"] > 1e-3 and "warning" not in q
    # perplexity on held-out rows, relative to the fp32 teacher: QAT closes at least half of PTQ's gap
    assert q["ppl_ratio_after"] - 1 < 0.5 * (q["ppl_ratio_ptq"] - 1)
    # the model is really quantized afterwards (no fake-quant modules left) and scores what the report says
    assert not any(isinstance(m, FakeQuantLinear) for m in tiny.hf.modules())
    assert report["quantized"] == 14 and math.isfinite(lm_loss(tiny.hf, calib[-4:]))


def test_hybrid_skips_training_when_ptq_is_within_tolerance(tiny, calib):
    before = {k: v.clone() for k, v in tiny.hf.state_dict().items()}
    cfg = QATConfig(target=Int4WeightConfig(method="rtn", group_size=16), steps=3, only_if_drop_above=0.5)
    report = quantize_(tiny, cfg, calib)
    assert report["qat"]["trained"] is False and report["qat"]["ppl_ratio_ptq"] < 1.5
    assert report["quantized"] == 14 and set(tiny.hf.state_dict()) != set(before)  # PTQ result kept


def test_fake_quant_forward_matches_converted_module():
    torch.manual_seed(0)
    w = torch.randn(32, 64)
    w[w.abs() < 0.3] = 0  # pruned
    x = torch.randn(5, 64)
    for scheme in ("int4-weight", "int8-weight", "int8-dynamic"):
        f = FakeQuantLinear(w, None, scheme, group_size=16)
        with torch.no_grad():
            assert torch.allclose(f(x), f.convert()(x), atol=1e-4, rtol=1e-4)


def test_default_lr_follows_the_grid_and_the_model_size():
    int4 = QATConfig(target=Int4WeightConfig())
    int8 = QATConfig(target=Int8WeightConfig())
    assert int4.default_lr(10_000_000) == 3e-4 and int8.default_lr(10_000_000) == 1e-5
    assert int4.default_lr(540_000_000) == pytest.approx(1.5e-4)  # sqrt(135M / 540M) = 1/2
    assert QATConfig(target=Int4WeightConfig(), lr=1e-3).lr == 1e-3


def test_a_run_that_ends_worse_than_ptq_keeps_ptq_and_says_so(sharp_tiny, calib):
    """A learning rate far too high wrecks the latent weights: the held-out check catches it, the PTQ layers
    (and the tied table with them) come back, and the report says so."""
    from slimlm.models.qlayers import Int4Embedding

    ptq = quantize_(load_tiny := sharp_tiny, Int4WeightConfig(method="rtn", group_size=16, skip=()), calib[:-4])
    assert ptq["tied"]
    with torch.inference_mode():
        want = load_tiny.hf(calib[-4:]).logits
    fresh = _sharp_copy()
    cfg = QATConfig(target=Int4WeightConfig(method="rtn", group_size=16, skip=()), steps=12, lr=1.0, holdout=4)
    q = quantize_(fresh, cfg, calib)["qat"]
    assert q["trained"] and q["ppl_ratio_after"] > q["ppl_ratio_ptq"] and q["kept"] == "ptq"
    assert q["diverged"].startswith("stopped after") and "rose above 3 x" in q["diverged"]  # stopped early
    assert "did not improve on PTQ" in q["warning"] and "PTQ weights are kept" in q["warning"]
    emb = fresh.hf.model.embed_tokens
    assert isinstance(emb, Int4Embedding) and emb.qweight.data_ptr() == fresh.hf.lm_head.qweight.data_ptr()
    with torch.inference_mode():
        assert torch.equal(fresh.hf(calib[-4:]).logits, want)  # exactly the PTQ model


def test_a_large_teacher_distils_from_bfloat16_weights(sharp_tiny, calib, monkeypatch):
    """Teachers above slimlm.distill's size threshold keep their weights in bfloat16 while QAT runs (half the
    bytes); QAT still closes PTQ's gap, and the reported ratios are against the float32 model."""
    import slimlm.distill.teacher as teacher_mod

    monkeypatch.setattr(teacher_mod, "AUTO_PARAMS", 0)
    cfg = QATConfig(target=Int4WeightConfig(method="rtn", group_size=16), steps=20, batch_size=4, holdout=4)
    fp32_loss = lm_loss(sharp_tiny.hf, calib[-4:])
    q = quantize_(sharp_tiny, cfg, calib)["qat"]
    assert q["teacher_precision"] == "bfloat16"
    assert q["ppl_ratio_after"] - 1 < 0.5 * (q["ppl_ratio_ptq"] - 1)
    assert q["ppl_ratio_after"] == pytest.approx(math.exp(lm_loss(sharp_tiny.hf, calib[-4:]) - fp32_loss), rel=1e-5)


def _sharp_copy():
    from slimlm.models import load

    m = load("tiny:llama?layers=2&hidden=64&heads=4&kv_heads=2&ffn=128&seed=0")
    with torch.no_grad():
        for p in m.hf.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return m


def test_fake_quant_gradients_match_plain_autograd_without_holding_the_fake_weight():
    """The custom backward recomputes the fake weight; its gradients equal autograd's through the STE."""
    torch.manual_seed(0)
    w = torch.randn(32, 64)
    w[w.abs() < 0.3] = 0  # pruned: the mask applies to the gradient too
    x = torch.randn(3, 5, 64)
    for scheme in ("int4-weight", "int8-weight", "int8-dynamic"):
        f = FakeQuantLinear(w, torch.randn(32), scheme, group_size=16)
        x1 = x.clone().requires_grad_(True)
        f(x1).square().sum().backward()
        ours = (x1.grad.clone(), f.weight.grad.clone())
        f.weight.grad = None
        x2 = x.clone().requires_grad_(True)
        xq = fake_int8_per_token(x2) if scheme == "int8-dynamic" else x2
        torch.nn.functional.linear(xq, f.fake_weight(), f.bias).square().sum().backward()
        torch.testing.assert_close(ours[0], x2.grad)
        torch.testing.assert_close(ours[1], f.weight.grad)


def test_qat_kd_from_hidden_states_equals_kd_on_logits_with_a_fake_quantized_tied_head(monkeypatch):
    """QAT computes its KD from final hidden states chunk by chunk; with the head and the tied table fake-quantized
    (``skip: none``) the loss and every trained weight's gradient equal the whole-logits computation."""
    import copy
    from types import SimpleNamespace

    from slimlm.distill.losses import fused
    from slimlm.models import load
    from slimlm.models.qlayers import set_module
    from slimlm.quantize.qat import FakeTiedTable, _kd_from_hidden, _kd_from_logits

    monkeypatch.setattr(fused, "CHUNK_ELEMENTS", 7 * 256)  # 7 positions a chunk: several chunks, one short
    m = load("tiny:llama?layers=2&tied=1")
    teacher = copy.deepcopy(m.hf).eval().requires_grad_(False)
    hf = m.hf.requires_grad_(False)
    head = FakeQuantLinear(hf.lm_head.weight.detach().clone(), None, "int4-weight", group_size=16, symmetric=True)
    set_module(hf, "lm_head", head)
    emb = hf.model.embed_tokens
    table = FakeTiedTable(head, SimpleNamespace(tied_to="lm_head", padding_idx=emb.padding_idx, embed_scale=1.0,
                                                num_embeddings=emb.num_embeddings, embedding_dim=emb.embedding_dim))
    set_module(hf, "model.embed_tokens", table)
    x = torch.randint(4, 250, (2, 24), generator=torch.Generator().manual_seed(0))
    grads = []
    for make in (_kd_from_hidden, _kd_from_logits):
        hf.zero_grad(set_to_none=True)
        loss = make(hf, teacher, 2.0)(x)
        loss.backward()
        grads.append((loss.item(), head.weight.grad.clone()))
    assert _kd_from_hidden(hf, teacher, 1.0) is not None
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5) and grads[0][0] > 0
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-7)


def _qat_run(calib, tmp_path, steps=6, every=1, stop_at=None, max_seconds=None, **over):
    """QAT on a fresh sharp tiny model with checkpoints in ``tmp_path``; ``stop_at``: interrupt after that step."""
    from slimlm.models import load

    m = load("tiny:llama?layers=2&hidden=64&heads=4&kv_heads=2&ffn=128&seed=0")
    with torch.no_grad():
        for p in m.hf.parameters():
            if p.dim() == 2:
                p.mul_(4.0)

    def progress(desc, done, total):
        if desc == "qat" and done == stop_at:
            raise KeyboardInterrupt

    cfg = QATConfig(target=Int4WeightConfig(method="rtn", group_size=16), steps=steps, batch_size=4, holdout=4,
                    checkpoint_every=every, **over)
    return m, quantize_(m, cfg, calib, progress=progress, checkpoint_dir=tmp_path / "ck", max_seconds=max_seconds)


def test_an_interrupted_qat_run_resumes_from_its_checkpoint_exactly(calib, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _qat_run(calib, tmp_path, stop_at=3)
    assert (tmp_path / "ck" / "meta.json").exists()
    resumed, report = _qat_run(calib, tmp_path)
    assert report["qat"]["resumed_from"] == 3
    straight, ref = _qat_run(calib, tmp_path / "other")
    assert "resumed_from" not in ref["qat"]
    assert report["qat"]["kd_loss_last"] == ref["qat"]["kd_loss_last"]
    a, b = resumed.hf.state_dict(), straight.hf.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_interrupted_qat_run_resumes_with_gradient_checkpointing_turned_on(calib, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _qat_run(calib, tmp_path, stop_at=3)
    resumed, report = _qat_run(calib, tmp_path, gradient_checkpointing=True)  # e.g. after an out-of-memory kill
    assert report["qat"]["resumed_from"] == 3
    _, ref = _qat_run(calib, tmp_path / "other")
    assert report["qat"]["kd_loss_last"] == pytest.approx(ref["qat"]["kd_loss_last"], rel=1e-5)


def test_a_qat_checkpoint_of_other_settings_is_refused(calib, tmp_path):
    from slimlm.errors import ConfigError

    with pytest.raises(KeyboardInterrupt):
        _qat_run(calib, tmp_path, stop_at=2)
    with pytest.raises(ConfigError, match="different settings.*lr"):
        _qat_run(calib, tmp_path, lr=1e-3)
    with pytest.raises(ConfigError, match="different settings.*data"):
        _qat_run(calib[:-1], tmp_path)


def test_qat_with_gradient_checkpointing_recomputes_the_blocks_and_trains_the_same_weights(calib):
    from slimlm.distill.recompute import is_on
    from slimlm.models import load

    runs = {}
    for on in (False, True):
        calls = [0]
        m = load("tiny:llama?layers=2&hidden=64&heads=4&kv_heads=2&ffn=128&seed=0")
        hooks = [layer.self_attn.register_forward_hook(lambda *a, _c=calls: _c.__setitem__(0, _c[0] + 1))
                 for layer in m.hf.model.layers]
        cfg = QATConfig(target=Int4WeightConfig(method="rtn", group_size=16), steps=3, batch_size=4, holdout=4,
                        gradient_checkpointing=on)
        report = quantize_(m, cfg, calib)
        for h in hooks:
            h.remove()
        assert not is_on(m.hf) and not any(mod.training for mod in m.hf.modules())  # handed back as it came
        runs[on] = (calls[0], report["qat"], m.hf.state_dict())
    # each of the 3 training steps runs both blocks' attention once more (the recomputation); nothing else changes
    assert runs[True][0] - runs[False][0] == 3 * 2
    assert runs[True][1]["kd_loss_last"] == pytest.approx(runs[False][1]["kd_loss_last"], rel=1e-5)
    a, b = runs[True][2], runs[False][2]
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)
        else:  # packed int4 codes: the same grid points but for a weight that sat on a rounding boundary
            assert (a[k] != b[k]).float().mean() < 1e-3, k


def test_a_qat_time_budget_stops_into_its_checkpoint_and_resumes_to_the_same_weights(calib, tmp_path):
    _, report = _qat_run(calib, tmp_path, every=0, max_seconds=1e-9)  # past the budget after every step
    assert report["qat"]["out_of_time"] == 1 and report["qat"]["trained"] is False
    assert (tmp_path / "ck" / "meta.json").exists()  # written although checkpoint_every is 0
    _, report = _qat_run(calib, tmp_path, every=0, max_seconds=1e-9)
    assert report["qat"]["resumed_from"] == 1 and report["qat"]["out_of_time"] == 2
    resumed, report = _qat_run(calib, tmp_path, every=0)  # no budget: runs to the end
    assert report["qat"]["resumed_from"] == 2 and report["qat"]["trained"] and "out_of_time" not in report["qat"]
    straight, ref = _qat_run(calib, tmp_path / "other", every=0)
    assert report["qat"]["kd_loss_last"] == ref["qat"]["kd_loss_last"]
    a, b = resumed.hf.state_dict(), straight.hf.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_qat_time_budget_needs_somewhere_to_stop_into(calib):
    from slimlm.errors import ConfigError
    from slimlm.models import load

    cfg = QATConfig(target=Int4WeightConfig(method="rtn", group_size=16), steps=2, batch_size=4, holdout=4)
    with pytest.raises(ConfigError, match="checkpoint directory"):
        quantize_(load("tiny:llama?layers=2&hidden=64&heads=4&kv_heads=2&ffn=128"), cfg, calib, max_seconds=60)
