"""SmolLM2-135M: structured surgery and vocabulary trimming on the real model (slow: loads 540 MB)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from slimlm.data import load_data
from slimlm.models import load, save
from slimlm.prune import make_calibration, parse_structured, prune_, save_kwargs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shakespeare():
    return load_data("shakespeare")


def test_smollm2_heads_ffn_hidden_vocab_reload_in_plain_transformers(shakespeare, tmp_path, monkeypatch):
    monkeypatch.delenv("SLIMLM_CACHE", raising=False)  # reuse the converted SmolLM2 in the user cache
    model = load("builtin:smollm2-135m")
    calib = make_calibration(model, shakespeare, n=2, seq_len=64)
    cfg = parse_structured("heads=0.33,ffn=0.25,hidden=0.1,vocab=domain")
    report = prune_(model, cfg, calib)
    shape = report["shape_after"]
    assert (shape["heads"], shape["kv_heads"], shape["intermediate_size"], shape["hidden_size"]) == (6, 2, 1152, 516)  # hidden: a multiple of the 6 heads left
    assert 19_000 < shape["vocab_size"] < 21_132  # <= 21,132 kept tokens is >= 12% of the parameters removed
    text = shakespeare.texts("eval")[0][:5000]
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert model.tokenizer.decode(ids) == text
    save(model, tmp_path / "v", **save_kwargs(cfg, report, model))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "v").eval()
    assert AutoTokenizer.from_pretrained(tmp_path / "v")(text, add_special_tokens=False)["input_ids"] == ids
    x = torch.tensor([ids[:128]])
    with torch.inference_mode():
        torch.testing.assert_close(plain(x).logits, model.hf(x).logits, rtol=1e-4, atol=1e-4)
