"""ONNX / OpenVINO export of BERT-family encoders (`slimlm.export.encoder`) on tiny in-process encoders.

The check compares outputs on a padded sample (perplexity does not apply): mean-pooled embedding cosine for an
encoder without a head, argmax agreement and max abs logit difference for a classifier.
"""

import importlib.util
import json

import pytest
import torch

from slimlm.errors import ConfigError
from slimlm.export import ExportCheckError, export, read_manifest
from slimlm.export import encoder as enc
from slimlm.models import load
from slimlm.prune import parse_structured, prune_

SAMPLE = ("Now, fair Hippolyta, our nuptial hour draws on apace; four happy days bring in another moon: but, O, "
          "methinks, how slow this old moon wanes! She lingers my desires, like to a step-dame or a dowager "
          "long withering out a young man's revenue. ") * 12
SHAPE = (2, 64)  # 8 sentences of at most 64 tokens: enough for padding in every batch, fast on one core

needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                               reason="onnxruntime not installed: pip install 'slimlm[export]'")
needs_ov = pytest.mark.skipif(importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None,
                              reason="openvino/nncf not installed: pip install 'slimlm[export]'")


def _padded_batch(tok):
    """Two rows of different lengths, padded, with a second segment in the first row."""
    b = tok(["Lord, what fools these mortals be!", "The course of true love never did run smooth, "
             "nor ever will, for all that lovers swear."], padding="longest", return_tensors="pt")
    types = torch.zeros_like(b["input_ids"])
    types[0, 4:int(b["attention_mask"][0].sum())] = 1
    assert (b["attention_mask"] == 0).any()
    return b["input_ids"], b["attention_mask"], types


@pytest.fixture(scope="module")
def bert_onnx(tmp_path_factory):
    m = load("tiny:bert?layers=2")
    out = tmp_path_factory.mktemp("enc") / "onnx"
    return m, export(m, "onnx", out, precision="fp32", sample_text=SAMPLE, sample_shape=SHAPE)


@needs_ort
def test_embedding_onnx_matches_torch_on_padded_input_and_records_the_check(bert_onnx):
    m, r = bert_onnx
    c = r["check"]
    assert c["passed"] and c["metric"] == "embedding_cosine" and 1 - c["min_cosine"] < 1e-5
    assert c["padded_sentences"] > 0 and c["sentences"] == 8 and c["reader"] == "onnxruntime"
    assert r["inputs"] == ["input_ids", "attention_mask", "token_type_ids"] and r["output"] == "last_hidden_state"
    man = read_manifest(r["out"])
    assert man["check"] == c and man["main_file"] == "model.onnx" and man["task"] == "encoder"
    assert man["type"] == r["type"] == "fp32"
    assert {"model.onnx", "tokenizer.json", "export.json"} <= set(man["files"]) | {"export.json"}
    fn = enc.onnx_encoder_fn(r["main_file"])
    ids, mask, types = _padded_batch(m.tokenizer)
    got = fn(ids, mask, types)
    with torch.inference_mode():
        ref = m.hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    keep = mask.bool()
    torch.testing.assert_close(got[keep], ref[keep], rtol=1e-4, atol=1e-4)
    # the padded row equals that row alone, unpadded: the graph honours the mask
    n = int(mask[0].sum())
    alone = fn(ids[:1, :n], mask[:1, :n], types[:1, :n])
    torch.testing.assert_close(got[0, :n], alone[0], rtol=1e-4, atol=1e-4)
    # and the segment input is wired: other token types give other outputs
    assert (fn(ids, mask) - got)[keep].abs().max() > 1e-3


@needs_ort
def test_pruned_classifier_exports_with_its_own_shapes(tmp_path):
    import onnx

    m = load("tiny:bert?labels=3&layers=2")
    prune_(m, parse_structured("heads=0.5,hidden=0.5,ffn=0.5"),
           torch.randint(5, 200, (4, 32), generator=torch.Generator().manual_seed(0)))
    m.rehash()
    assert (m.adapter.hidden_size, m.adapter.num_heads, m.adapter.intermediate_size) == (32, 2, 64)
    r = export(m, "onnx", tmp_path / "p", precision="fp32", sample_text=SAMPLE, sample_shape=SHAPE)
    c = r["check"]
    assert c["passed"] and c["metric"] == "logits" and c["argmax_agreement"] == 1.0
    assert c["relative_logit_diff"] < 1e-4 and r["output"] == "logits" and r["task"] == "classification"
    shapes = {tuple(t.dims) for t in onnx.load(r["main_file"]).graph.initializer}
    assert (32, 32) in shapes and ((32, 64) in shapes or (64, 32) in shapes)  # the pruned widths, not 64 / 128
    assert not any(64 in s and 128 in s for s in shapes)
    ids, mask, types = _padded_batch(m.tokenizer)
    out = enc.onnx_encoder_fn(r["main_file"])(ids, mask, types)
    with torch.inference_mode():
        torch.testing.assert_close(out, m.hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits,
                                   rtol=1e-4, atol=1e-5)
    assert read_manifest(tmp_path / "p")["source_hash"] == m.hash


@needs_ort
def test_onnx_int8_classifier_is_checked_and_records_its_metric(tmp_path):
    m = load("tiny:bert?labels=6&layers=2")
    r = export(m, "onnx", tmp_path / "q", precision="int8", sample_text=SAMPLE, sample_shape=SHAPE)
    c = read_manifest(tmp_path / "q")["check"]
    assert c["passed"] and c["metric"] == "logits" and c["tolerance"] == enc.LOGIT_TOLERANCES["int8"]
    assert 0 < c["max_abs_logit_diff"] and c["relative_logit_diff"] <= c["tolerance"]
    assert c["argmax_agreement"] >= enc.MIN_ARGMAX_AGREEMENT["int8"]
    assert r["main_file"].endswith("model.int8.onnx") and r["precision"] == "int8"


@needs_ov
def test_openvino_int4_embedding_is_checked_in_f32(tmp_path):
    m = load("tiny:bert?layers=2")
    r = export(m, "openvino", tmp_path / "v", precision="int4", sample_text=SAMPLE, sample_shape=SHAPE)
    c = r["check"]
    assert c["passed"] and c["reader"] == "openvino CPU" and c["tolerance"] == enc.EMBEDDING_TOLERANCES["int4"]
    assert 0 < 1 - c["min_cosine"] <= c["tolerance"]  # int4 costs something, within its tolerance
    assert r["group_size"] == 32 and "openvino_model.bin" in r["files"] and "tokenizer.json" in r["files"]
    ids, mask, _ = _padded_batch(m.tokenizer)
    got = enc.openvino_encoder_fn(r["main_file"])(ids, mask)
    assert got.shape == (2, ids.shape[1], 64) and torch.isfinite(got).all()


@needs_ort
def test_a_corrupted_export_fails_the_check_and_leaves_nothing(tmp_path, monkeypatch):
    real = enc.onnx_encoder_fn

    def perturbed(path, threads=1):
        fn = real(path, threads)
        g = torch.Generator().manual_seed(0)
        return lambda *a, **k: (lambda out: out + 0.3 * out.std() * torch.randn(out.shape, generator=g))(fn(*a, **k))

    monkeypatch.setattr(enc, "onnx_encoder_fn", perturbed)
    with pytest.raises(ExportCheckError, match="cosine similarity") as err:
        export(load("tiny:bert?layers=2"), "onnx", tmp_path / "bad", sample_text=SAMPLE, sample_shape=SHAPE)
    assert err.value.result["passed"] is False and err.value.result["min_cosine"] < 1 - enc.EMBEDDING_TOLERANCES["fp32"]
    assert not (tmp_path / "bad").exists()


def test_the_check_catches_a_dropped_mask_and_a_flipped_classifier():
    m = load("tiny:bert?layers=2")
    with torch.no_grad():  # peaked attention, so what the mask hides matters (a random tiny BERT barely attends)
        for layer in m.adapter.layers():
            parts = m.adapter.attention(layer)
            parts.q.weight.mul_(12.0), parts.k.weight.mul_(12.0), parts.v.weight.mul_(8.0)
    sample = enc.sample_sentences(m, SAMPLE, 8, 64)
    assert all((mask == 0).any() for mask in sample["attention_mask"].split(enc.CHECK_BATCH))  # padding in every batch
    ref = enc.run_sample(enc.torch_encoder_fn(m.hf), sample)
    same = enc.compare_outputs(ref, ref, sample, "encoder", "fp32", "x")
    assert same["passed"] and same["min_cosine"] > 1 - 1e-6
    fn = enc.torch_encoder_fn(m.hf)
    no_mask = enc.run_sample(lambda ids, mask, types=None: fn(ids, torch.ones_like(mask)), sample)
    with pytest.raises(ExportCheckError, match="below") as err:  # ~0.007 here; 0.49 on all-MiniLM-L6-v2
        enc.compare_outputs(ref, no_mask, sample, "encoder", "fp32", "x")
    assert 1 - err.value.result["min_cosine"] > 10 * enc.EMBEDDING_TOLERANCES["fp32"]
    logits = [torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]])] * 2
    ok = enc.compare_outputs(logits, [x + 0.01 for x in logits], sample, "classification", "int8", "x")
    assert ok["argmax_agreement"] == 1.0 and ok["max_abs_logit_diff"] == pytest.approx(0.01, abs=1e-6)
    flipped = [x[:, [1, 0, 2]] for x in logits]
    with pytest.raises(ExportCheckError, match="top class agrees on 0%") as err:
        enc.compare_outputs(logits, flipped, sample, "classification", "int8", "x", tolerance=10.0)
    assert err.value.result["argmax_agreement"] == 0.0


@pytest.mark.parametrize("fmt", ["gguf", "transformers"])
def test_gguf_and_transformers_refuse_an_encoder_naming_what_works(fmt, tmp_path):
    with pytest.raises(ConfigError, match="onnx or --format openvino") as err:
        export(load("tiny:bert?labels=2&layers=1"), fmt, tmp_path / "x")
    assert "\n" not in str(err.value) and "causal" in str(err.value)
    assert not (tmp_path / "x").exists()


@needs_ort
def test_cli_exports_an_encoder_with_json_and_refuses_gguf(tmp_path, capsys):
    from slimlm.cli.main import main

    rc = main(["export", "tiny:bert?labels=4&layers=1", "--format", "onnx", "--out", str(tmp_path / "o"), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["check"]["passed"] and res["check"]["metric"] == "logits" and res["output"] == "logits"
    assert res["check"]["sentences"] == 16  # the default sample: 4 x 4 sentences of the Shakespeare eval split
    assert main(["export", "tiny:bert", "--format", "gguf", "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "--format onnx" in err[-1]
    assert not (tmp_path / "g").exists()
