"""QAT: fake quantization + distillation lowers the quantized model's loss; the hybrid path can skip it."""

import math

import torch

from slimlm.quantize import Int4WeightConfig, QATConfig, quantize_
from slimlm.quantize.fallback import lm_loss
from slimlm.quantize.qat import FakeQuantLinear


def test_qat_lowers_quantized_loss(sharp_tiny, calib):
    tiny = sharp_tiny
    cfg = QATConfig(target=Int4WeightConfig(method="rtn", group_size=16), steps=20, lr=3e-4, batch_size=4,
                    holdout=4)
    report = quantize_(tiny, cfg, calib)
    q = report["qat"]
    assert q["trained"] and q["ppl_ratio_ptq"] > 1.002
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
