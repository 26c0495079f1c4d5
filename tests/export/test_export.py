"""Export to GGUF / ONNX / OpenVINO on tiny models of every architecture, each checked on the way out.

The tiny models are "sharpened" (final norm scaled up) so their next-token distributions are peaked: a wrong
conversion then moves perplexity far beyond any tolerance, while a faithful f32 export matches to ~1e-6.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from slimlm.errors import ConfigError, SpecError
from slimlm.export import ExportCheckError, export, read_manifest
from slimlm.models import load
from slimlm.prune import parse_structured, prune_

SAMPLE = ("Now, fair Hippolyta, our nuptial hour draws on apace; four happy days bring in another moon: but, O, "
          "methinks, how slow this old moon wanes! She lingers my desires, like to a step-dame or a dowager "
          "long withering out a young man's revenue. ") * 6




def sharp(arch: str, prune: str | None = "heads=0.5,ffn=0.25,hidden=0.25"):
    m = load(f"tiny:{arch}?layers=2")
    norm = m.adapter.final_norm().weight
    with torch.no_grad():
        norm.add_(7.0) if arch.startswith("gemma") else norm.mul_(8.0)  # Gemma scales by (1 + weight)
        for layer in m.adapter.layers():  # peaked attention, so a wrong rotary layout shows
            m.adapter.attention(layer).q.weight.mul_(12.0)
            m.adapter.attention(layer).k.weight.mul_(12.0)
    if prune:
        prune_(m, parse_structured(prune), torch.randint(4, 250, (4, 32), generator=torch.Generator().manual_seed(0)))
    m.rehash()
    return m


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gemma2", "gemma3", "mistral", "phi3"])
def test_pruned_variant_exports_to_gguf_f32_exactly_and_q8_0_within_tolerance(arch, tmp_path):
    # llama.cpp's qwen2 needs heads x head_dim == hidden: heads and hidden pruned by the same fraction
    m = sharp(arch, "heads=0.5,ffn=0.25,hidden=0.5" if arch == "qwen2" else "heads=0.5,ffn=0.25,hidden=0.25")
    r = export(m, "gguf", tmp_path / "f32", precision="f32", sample_text=SAMPLE)
    assert abs(r["check"]["relative_change"]) < 1e-4 and r["check"]["variant_perplexity"] > 20
    r8 = export(m, "gguf", tmp_path / "q8", precision="q8_0", sample_text=SAMPLE)
    assert r8["check"]["passed"] and abs(r8["check"]["relative_change"]) < 0.03
    assert r8["files"]["model-q8_0.gguf"] < r["files"]["model-f32.gguf"]
    assert read_manifest(tmp_path / "q8")["precision"] == "q8_0"
    from slimlm.models.loading import gguf_header

    head = gguf_header(tmp_path / "q8" / "model-q8_0.gguf")  # what llama.cpp reads: the variant's own shapes
    arch_key = head["general.architecture"]
    assert head[f"{arch_key}.block_count"] == 2 and head[f"{arch_key}.embedding_length"] == (32 if arch == "qwen2" else 48)
    assert head[f"{arch_key}.attention.head_count_kv"] == 1 and head[f"{arch_key}.attention.key_length"] == 16


def test_gguf_4bit_is_smaller_and_checked(tmp_path):
    m = sharp("llama", prune=None)
    r = export(m, "gguf", tmp_path / "q4", precision="q4_0", sample_text=SAMPLE)
    assert r["tensor_types"].get("Q4_0", 0) >= 14 and r["check"]["passed"]


@pytest.mark.parametrize("arch", ["qwen2", "llama", "mistral", "qwen3", "gemma2", "gemma3", "phi3"])
def test_slimlm_gguf_export_loads_back_through_slimlm(arch, tmp_path):
    """The same logits after a GGUF round trip; for Gemma that needs the attention scale, which GGUF does not
    carry (the tiny Gemmas' head size is 16, where transformers' reader alone assumed 256)."""
    m = sharp(arch, prune="layers=1,heads=0.5,ffn=0.25," + ("hidden=0.5" if arch == "qwen2" else "hidden=0.25"))
    if arch != "qwen2":  # llama.cpp's qwen2 needs heads x head size == hidden
        assert m.hf.config.hidden_size // m.hf.config.num_attention_heads != 16  # head size is not hidden / heads
    export(m, "gguf", tmp_path / "g", precision="f32", sample_text=SAMPLE)
    back = load(tmp_path / "g" / "model-f32.gguf")
    ids = torch.randint(4, 250, (1, 20))
    text = "Lord, what fools these mortals be!"
    assert back.tokenizer(text, add_special_tokens=False)["input_ids"] == \
        m.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        torch.testing.assert_close(back.hf(ids).logits, m.hf(ids).logits, rtol=1e-4, atol=1e-4)


def test_a_wrong_conversion_fails_the_check(tmp_path, monkeypatch):
    import slimlm.export.gguf as g

    monkeypatch.setattr(g, "_permute", lambda w, n: w)  # forget llama.cpp's rotary layout
    with pytest.raises(ExportCheckError, match="differs from the variant's"):
        export(sharp("llama"), "gguf", tmp_path / "bad", precision="f32", sample_text=SAMPLE)
    assert not (tmp_path / "bad").exists()  # nothing half-written is left behind


def test_refusals_are_one_sentence_before_work(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    m = load("tiny:llama?layers=1")
    with pytest.raises(SpecError, match="not written by slimlm export"):
        export(m, "gguf", tmp_path / "mine")
    with pytest.raises(ConfigError, match="q4_0"):
        export(m, "gguf", tmp_path / "x", precision="q4_k")
    with pytest.raises(ConfigError, match="causal"):
        export(load("tiny:bert"), "gguf", tmp_path / "x")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_slimlm_int8_variant_exports_from_its_dequantized_weights(tmp_path):
    from slimlm.quantize import Int8WeightConfig, quantize_

    m = sharp("llama", prune=None)
    quantize_(m, Int8WeightConfig())
    r = export(m, "gguf", tmp_path / "g", precision="f32", sample_text=SAMPLE)
    assert abs(r["check"]["relative_change"]) < 1e-4  # the int8 grid's values, exactly


@pytest.mark.parametrize("arch, scheme", [("llama", "int8"), ("gemma2", "int8"), ("gemma2", "int4")])
def test_tied_quantized_variant_exports_one_matrix(arch, scheme, tmp_path):
    """A tied model with both ends in int8 (or an int4 head serving the table) keeps one (vocab, hidden)
    matrix, so its GGUF has no separate output tensor, and Gemma 2 (whose llama.cpp graph has none) exports
    instead of being refused as untied."""
    from gguf import GGUFReader

    from slimlm.quantize import Int4WeightConfig, Int8WeightConfig, quantize_

    m = sharp(arch, prune=None)
    config = Int8WeightConfig(skip=()) if scheme == "int8" else Int4WeightConfig(method="rtn", skip=())
    assert quantize_(m, config)["tied"]
    r = export(m, "gguf", tmp_path / "g", precision="f32", sample_text=SAMPLE)
    assert abs(r["check"]["relative_change"]) < 1e-4
    names = {t.name for t in GGUFReader(r["main_file"]).tensors}
    assert "token_embd.weight" in names and "output.weight" not in names


@pytest.mark.parametrize("symmetric", [True, False])
def test_q4_0_writes_a_vocabulary_matrix_already_on_its_grid_as_q4_0(symmetric, tmp_path):
    """A tied int4 variant on Q4_0's grid (groups of 32) keeps its one vocabulary matrix in Q4_0, exactly:
    half the bytes of the Q8_0 a float matrix gets. Off the grid (asymmetric int4), it stays Q8_0."""
    from gguf import GGUFReader

    from slimlm.quantize import Int4WeightConfig, quantize_

    m = sharp("llama", prune=None)
    assert quantize_(m, Int4WeightConfig(method="rtn", group_size=32, symmetric=symmetric, skip=()))["tied"]
    r = export(m, "gguf", tmp_path / "g", precision="q4_0", sample_text=SAMPLE)
    types = {t.name: t.tensor_type.name for t in GGUFReader(r["main_file"]).tensors}
    assert types["token_embd.weight"] == ("Q4_0" if symmetric else "Q8_0") and "output.weight" not in types
    if symmetric:
        assert r["q4_0_grid_tensors"] == 1 + 7 * m.adapter.num_layers  # every block Linear and the table
        assert abs(r["check"]["relative_change"]) < 1e-3  # the variant's own values


def test_cli_export_json(tmp_path, capsys):
    from slimlm.cli.main import main

    rc = main(["export", "tiny:qwen3?layers=1", "--format", "gguf", "--type", "q8_0", "--out", str(tmp_path / "o"),
               "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["check"]["passed"] and res["precision"] == "q8_0"
    assert main(["export", "tiny:llama", "--format", "tflite", "--out", str(tmp_path / "p")]) == 2


needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                               reason="onnxruntime not installed: pip install 'slimlm[export]'")
needs_ov = pytest.mark.skipif(importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None,
                              reason="openvino/nncf not installed: pip install 'slimlm[export]'")


@needs_ort
def test_onnx_fp32_matches_and_int8_is_checked(tmp_path):
    m = sharp("qwen2")
    r = export(m, "onnx", tmp_path / "o", precision="fp32", sample_text=SAMPLE)
    assert abs(r["check"]["relative_change"]) < 1e-4 and "tokenizer.json" in r["files"]
    r8 = export(m, "onnx", tmp_path / "o8", precision="int8", sample_text=SAMPLE, tolerance=0.5)
    assert r8["files"]["model.int8.onnx"] < r["files"]["model.onnx"]
    assert r8["type"] == "int8" and read_manifest(r8["out"])["type"] == "int8"  # export.json names the type


@needs_ort
def test_onnx_int8_applies_smoothquant_to_a_copy_and_it_tames_an_outlier_channel(tmp_path):
    from slimlm.export import smoothed_copy

    m = sharp("llama", prune=None)
    with torch.no_grad():
        for layer in m.adapter.layers():  # one input channel of every block 40x larger: an activation outlier
            layer.input_layernorm.weight[5] *= 40.0
            layer.post_attention_layernorm.weight[9] *= 40.0
    m.rehash()
    before = {k: v.clone() for k, v in m.hf.state_dict().items()}
    ids = torch.randint(4, 250, (1, 32), generator=torch.Generator().manual_seed(0))
    smooth = smoothed_copy(m, m.hf, 0.5, "shakespeare", rows=4, seq_len=64)
    with torch.inference_mode():
        assert torch.allclose(smooth(ids).logits, m.hf(ids).logits, atol=1e-3)  # fp32-equivalent
    assert all(torch.equal(m.hf.state_dict()[k], v) for k, v in before.items())  # the variant is untouched
    assert smooth.model.layers[0].input_layernorm.weight[5] < m.hf.model.layers[0].input_layernorm.weight[5]
    plain = export(m, "onnx", tmp_path / "plain", precision="int8", sample_text=SAMPLE, smoothquant=None, check=True,
                   tolerance=10.0)
    sq = export(m, "onnx", tmp_path / "sq", precision="int8", sample_text=SAMPLE, tolerance=10.0)
    assert plain["smoothquant"] is None and sq["smoothquant"] == 0.8
    from slimlm.export.onnx import onnx_logits_fn

    with torch.inference_mode():
        ref = m.hf(ids).logits
    err = {name: float((torch.as_tensor(onnx_logits_fn(Path(r["main_file"]))(ids)) - ref).pow(2).mean())
           for name, r in (("plain", plain), ("sq", sq))}
    assert err["sq"] < 0.7 * err["plain"], err  # ONNX Runtime's per-tensor int8 loses less after SmoothQuant


@needs_ov
def test_openvino_int4_weight_compression_is_checked(tmp_path):
    m = sharp("gemma3", prune=None)
    r = export(m, "openvino", tmp_path / "v", precision="int4", group_size=32, sample_text=SAMPLE)
    assert r["check"]["passed"] and "openvino_model.xml" in r["files"]
    assert r["data_aware"][0] == "awq+scale_estimation" and r["data_aware"][1] > 0  # calibrated by default


def test_vocabulary_trimmed_variant_exports_with_its_own_vocabulary_and_merges(tmp_path):
    from slimlm.prune import Calibration
    from slimlm.testing.bpe import bpe_llama

    m = bpe_llama([SAMPLE, "def f(x): return x + 1\nclass A: pass\n" * 20], 500, spec="bpe")
    with torch.no_grad():
        m.hf.model.norm.weight.mul_(8.0)
    prune_(m, parse_structured("vocab=domain"), Calibration(torch.zeros(1, 2, dtype=torch.long), texts=[SAMPLE]))
    assert m.adapter.vocab_size < 500
    r = export(m, "gguf", tmp_path / "g", precision="f32", sample_text=SAMPLE)
    assert abs(r["check"]["relative_change"]) < 1e-4
    back = load(tmp_path / "g" / "model-f32.gguf")
    assert back.adapter.vocab_size == m.adapter.vocab_size
    assert back.tokenizer(SAMPLE[:80], add_special_tokens=False)["input_ids"] == \
        m.tokenizer(SAMPLE[:80], add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("precision, hint", [("q4_1", "try q4_0 or q5_0"), ("q4_0", "try a wider type")])
def test_a_failed_check_on_the_minimum_grid_types_names_the_snap_back(precision, hint):
    from slimlm.export.check import compare

    with pytest.raises(ExportCheckError, match=hint) as err:
        compare(30.0, 75.0, precision, "model.gguf")
    assert err.value.result["passed"] is False and err.value.result["relative_change"] == pytest.approx(1.5)
    assert compare(30.0, 30.3, precision, "model.gguf")["passed"]


def test_a_gguf_whose_pre_tokenizer_splits_digits_loads_back_splitting_them(tmp_path):
    """llama.cpp's ``smollm`` pre-tokenizer (also StarCoder's, Command-R's...) splits every digit off first;
    transformers' GGUF reader drops that and would read ``2026`` as one piece. slimlm's reader puts it back."""
    from tokenizers import Tokenizer, pre_tokenizers

    from slimlm.models.loading import gguf_header

    m = sharp("llama", prune=None)
    j = json.loads(m.tokenizer.backend_tokenizer.to_str())  # byte-level only: give it a digit merge, "20"
    vocab = j["model"]["vocab"]
    vocab["20"] = vocab.pop("\u00b9")  # a byte the texts below never use
    j["model"]["merges"].insert(0, ["2", "0"])
    m.tokenizer._tokenizer = Tokenizer.from_str(json.dumps(j))
    assert m.tokenizer.tokenize("2026") == ["20", "2", "6"]  # byte-level alone: "20" is a piece
    m.tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    assert m.tokenizer.tokenize("2026") == ["2", "0", "2", "6"]
    export(m, "gguf", tmp_path / "g", precision="f32", sample_text=SAMPLE)
    path = tmp_path / "g" / "model-f32.gguf"
    assert gguf_header(path)["tokenizer.ggml.pre"] == "smollm"
    text = "In 2026, 12 mortals paid 3.50 for 1000 fools."
    want = m.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert load(path).tokenizer(text, add_special_tokens=False)["input_ids"] == want
