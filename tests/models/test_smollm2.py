"""Real-model checks on the embedded SmolLM2-135M (slow: converts the GGUF once, ~30 s)."""

import os

import pytest
import torch
from transformers import AutoModelForCausalLM

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    os.environ["SLIMLM_TEST_REAL_CACHE"] = "1"
    from slimlm.models import load

    return load("builtin:smollm2-135m")


def test_params_and_structure(smol):
    assert smol.num_params() == 134_515_008
    d = smol.adapter.describe()
    assert (d["layers"], d["hidden_size"], d["heads"], d["kv_heads"], d["head_dim"]) == (30, 576, 9, 3, 64)
    assert d["intermediate_size"] == 1536 and d["vocab_size"] == 49152


def test_saved_copy_reloads_with_plain_transformers(smol, tmp_path):
    from slimlm.models import save

    save(smol, tmp_path / "s")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval()
    x = smol.tokenizer("Now, fair Hippolyta, our nuptial hour", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(plain(x).logits, smol.hf(x).logits)


def test_perplexity_matches_plain_hf_on_midsummer(smol):
    from slimlm.data import eval_windows, load_data, shakespeare_text_path
    from slimlm.evaluate import evaluate

    path = shakespeare_text_path("comedies/a-midsummer-night-s-dream")
    res = evaluate(smol, load_data(str(path)), seq_len=512, max_tokens=4096)
    windows = eval_windows(smol.tokenizer, [path.read_text()], 512, 4096)
    nll, n = 0.0, 0
    with torch.no_grad():
        for w in windows:
            loss = smol.hf(w[None], labels=w[None]).loss.item()
            nll += loss * (len(w) - 1)
            n += len(w) - 1
    ref = float(torch.tensor(nll / n).exp())
    assert abs(res["perplexity"] / ref - 1) < 1e-3
    assert 30 < res["perplexity"] < 35  # 32.31 by a plain HF loss over the same 4,096 tokens


def test_digits_are_split_as_smollm2_was_trained(smol):
    """The GGUF says pre-tokenizer ``smollm``: every digit its own piece (transformers' reader alone would
    give ``Ġ2026``-style merges the model never saw in training)."""
    assert smol.tokenizer.tokenize(" 2026 and 10") == ["Ġ", "2", "0", "2", "6", "Ġand", "Ġ", "1", "0"]
