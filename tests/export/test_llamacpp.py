"""llama.cpp itself (xllamacpp's prebuilt library through `slimlm.export.llamacpp`): the GGUF files slimlm writes
load and score in llama.cpp as the variant does in torch, K-quant mixes follow llama.cpp's rules and fallbacks,
and `profile` / `compress --runtime llamacpp` run end to end. Skipped when llama.cpp is not installed."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from slimlm.errors import ConfigError
from slimlm.export import export
from slimlm.export.gguf import kquant_type
from slimlm.models import load

pytestmark = pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None,
                                reason="llama.cpp not installed: pip install 'slimlm[export]'")

# merges=1: llama.cpp refuses a BPE vocabulary without merges (the plain tiny tokenizer has none)
K256 = "tiny:llama?merges=1&layers=8&hidden=256&ffn=512&heads=4&kv_heads=2"


def test_llamacpp_logits_match_torch_on_an_f32_export(tmp_path):
    from slimlm.export.llamacpp import LlamaCpp

    m = load("tiny:qwen3?merges=1&layers=2")
    path = export(m, "gguf", tmp_path / "g", precision="f32", check=False)["main_file"]
    ids = torch.randint(4, 250, (1, 40), generator=torch.Generator().manual_seed(0))
    with LlamaCpp(path, threads=1, n_ctx=64) as llm:
        got = torch.from_numpy(llm.logits(ids[0].tolist()))  # (40, vocab)
        assert llm.n_vocab == m.hf.config.vocab_size
        steps = llm.greedy(ids[0, :8].tolist(), 5)
    with torch.inference_mode():
        want = m.hf(ids).logits[0]
        ref = m.hf.generate(ids[:, :8], max_new_tokens=5, do_sample=False, pad_token_id=3)[0, 8:].tolist()
    assert torch.allclose(got, want, atol=1e-3), (got - want).abs().max()
    assert steps == ref  # decoding with llama.cpp's KV cache follows torch's greedy path


def test_q4_k_m_follows_llamacpp_mix_and_is_checked_on_llamacpp(tmp_path):
    r = export(load(K256), "gguf", tmp_path / "q4km", precision="q4_k_m")
    # 8 layers: attn_v and ffn_down of layers 0, 3, 6, 7 in Q6_K, with the tied embedding (output): 9 Q6_K
    assert r["tensor_types"] == {"Q6_K": 9, "Q4_K": 48, "F32": 17}
    assert r["kquant_fallback_tensors"] == []
    assert r["check"]["passed"] and r["check"]["reader"].startswith("llama.cpp")
    f16 = export(load(K256), "gguf", tmp_path / "f16", precision="f16", check=False)
    assert r["files"]["model-q4_k_m.gguf"] < 0.4 * f16["files"]["model-f16.gguf"]


def test_q4_0_with_an_importance_matrix_loses_less_where_activations_are_large(tmp_path):
    """llama-imatrix's statistic (mean squared input per column) steers llama.cpp's 4-bit rounding: with a few
    input channels 30x louder than the rest, the weighted Q4_0 file is closer to the model than plain rounding."""
    from slimlm.export.gguf import importance_matrix
    from slimlm.export.llamacpp import LlamaCpp

    m = load("tiny:llama?merges=1&layers=2&hidden=128&ffn=256&heads=4&kv_heads=2")
    with torch.no_grad():
        for layer in m.adapter.layers():  # loud input channels feeding q/k/v and gate/up
            layer.input_layernorm.weight[[3, 40, 77]] *= 30.0
            layer.post_attention_layernorm.weight[[5, 64, 100]] *= 30.0
    m.rehash()
    tokens = torch.randint(4, 250, (8, 64), generator=torch.Generator().manual_seed(1))
    imp = importance_matrix(m.hf, tokens)
    q = imp["model.layers.0.self_attn.q_proj.weight"]
    assert q.shape == (128,) and q[[3, 40, 77]].min() > 100 * float(np.median(q))  # 30x louder: ~900x the square
    weighted = export(m, "gguf", tmp_path / "w", precision="q4_0", check=False)
    plain = export(m, "gguf", tmp_path / "p", precision="q4_0", check=False, data_aware=False)
    assert weighted["imatrix_tensors"] == 14 and weighted["imatrix"]["tokens"] > 0  # 7 linears x 2 blocks
    assert plain["imatrix_tensors"] == 0 and plain["imatrix"] is None
    ids = torch.randint(4, 250, (1, 48), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = m.hf(ids).logits[0]
    err = {}
    for name, r in (("weighted", weighted), ("plain", plain)):
        with LlamaCpp(r["main_file"], threads=1, n_ctx=64) as llm:
            err[name] = float((torch.from_numpy(llm.logits(ids[0].tolist())) - want).pow(2).mean())
    assert err["weighted"] < 0.8 * err["plain"], err


def test_k_quant_falls_back_per_tensor_where_rows_do_not_fit_256(tmp_path):
    # hidden 64 (pruned widths are rarely multiples of 256): every matrix reading the hidden state falls back
    r = export(load("tiny:llama?merges=1&layers=2"), "gguf", tmp_path / "q", precision="q4_k_m")
    assert "Q4_K" not in r["tensor_types"] and r["tensor_types"]["Q5_0"] > 0
    assert "blk.0.attn_q.weight" in r["kquant_fallback_tensors"] and r["check"]["passed"]
    # the rules, as llama.cpp's llama_tensor_get_type has them
    assert kquant_type("q4_k_m", "blk.0.ffn_down.weight", 1536, 30, False) == "Q6_K"  # first eighth
    assert kquant_type("q4_k_m", "blk.4.ffn_down.weight", 1536, 30, False) == "Q4_K"
    assert kquant_type("q4_k_m", "blk.4.ffn_down.weight", 1000, 30, False) == "F16"  # 1000 % 32 != 0
    assert kquant_type("q4_k_m", "blk.4.attn_q.weight", 576, 30, False) == "Q5_0"
    assert kquant_type("q4_k_m", "token_embd.weight", 576, 30, False) == "Q8_0"  # tied: the output's rule
    assert kquant_type("q4_k_m", "token_embd.weight", 512, 30, True) == "Q4_K"
    assert kquant_type("q4_k_s", "blk.2.attn_v.weight", 512, 30, True) == "Q5_K"


def test_llamacpp_refuses_what_it_cannot_express(tmp_path):
    from slimlm.prune import parse_structured, prune_

    m = load("tiny:qwen2?merges=1&layers=2")
    prune_(m, parse_structured("hidden=0.25"), torch.randint(4, 250, (2, 16)))
    with pytest.raises(ConfigError, match="qwen2 sizes attn_q"):
        export(m, "gguf", tmp_path / "q", precision="f16")
    with pytest.raises(ConfigError, match="could not load"):
        from slimlm.export.llamacpp import LlamaCpp

        (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\0" * 64)
        LlamaCpp(tmp_path / "bad.gguf")


def test_profile_on_llamacpp_interleaves_and_measures_decode():
    from slimlm.export.runtimes import compare_runtime

    res = compare_runtime([load("tiny:llama?merges=1&layers=2"), load("tiny:llama?merges=1&layers=1")], "llamacpp",
                          shapes=((1, 16),), decode_tokens=8, repeats=2, warmup=1)
    assert [r["runtime"] for r in res] == ["llamacpp"] * 2 and res[0]["precision"] == "f16"
    assert res[0]["latency_ms"]["1x16"]["n"] == 2 and res[1]["disk_mb"] < res[0]["disk_mb"]
    assert res[0]["decode_tokens_per_s"] > 0 and res[1]["ratios"]["decode_speedup"] > 0


def test_a_gguf_profiles_on_llamacpp_as_the_file_brought_unless_a_type_is_asked(tmp_path):
    from slimlm.export.runtimes import compare_runtime

    res = export(load("tiny:llama?merges=1&layers=2"), "gguf", tmp_path / "g", precision="q8_0", check=False)
    brought = load(res["main_file"])  # dequantized to fp32 in torch; llama.cpp gets the q8_0 file itself
    size = res["files"]["model-q8_0.gguf"] / 1e6
    as_is, f16 = (compare_runtime([brought], "llamacpp", shapes=((1, 16),), decode_tokens=4, repeats=1, warmup=0,
                                  precision=p)[0] for p in (None, "f16"))
    assert (as_is["precision"], as_is["as_brought"], as_is["disk_mb"]) == ("q8_0", True, pytest.approx(size))
    assert (f16["precision"], f16["as_brought"]) == ("f16", False) and f16["disk_mb"] > 1.5 * size
    assert as_is["decode_tokens_per_s"] > 0
    assert (tmp_path / "g" / "model-q8_0.gguf").stat().st_size == res["files"]["model-q8_0.gguf"]  # untouched


def test_cli_profile_and_compress_on_llamacpp(capsys, tmp_path, text_file):
    from slimlm.cli.main import main

    code = main(["profile", "tiny:llama?merges=1&layers=2", "--runtime", "llamacpp", "--shapes", "1x16",
                 "--repeats", "2", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    data = json.loads(out)
    row = data[0] if isinstance(data, list) else data
    assert row["runtime"] == "llamacpp" and row["decode_tokens_per_s"] > 0

    (tmp_path / "q8.yaml").write_text("name: q8\nstages:\n  - quantize: {scheme: int8-weight}\n")
    out_dir = tmp_path / "run"
    code = main(["compress", "tiny:llama?merges=1&layers=2", "--recipe", str(tmp_path / "q8.yaml"), "--data",
                 str(text_file), "--ood-data", "none", "--out", str(out_dir), "--eval-tokens", "128", "--seq-len",
                 "32", "--shapes", "1x16", "--repeats", "2", "--max-drop", "50%", "--runtime", "llamacpp", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    by_base = {v["is_baseline"]: v["metrics"] for v in data["variants"]}
    base, q8 = by_base[True], by_base[False]
    assert (base["runtime"], base["runtime_precision"]) == ("llamacpp", "f16")
    chk = q8["runtime_check"]
    assert q8["runtime_precision"] == "q8_0" and abs(chk["relative_change"]) <= chk["tolerance"]
    assert chk["reader"].startswith("llama.cpp")
    assert q8["decode_tokens_per_s"] > 0 and q8["runtime_disk_mb"] < base["runtime_disk_mb"]
    assert data["runtime"]["name"] == "llamacpp"

    # a baseline brought as a .gguf is timed as that file (the one served today), its variants as exports
    gg = export(load("tiny:llama?merges=1&layers=2"), "gguf", tmp_path / "g", precision="q4_0", check=False)
    code = main(["compress", gg["main_file"], "--recipe", str(tmp_path / "q8.yaml"), "--data", str(text_file),
                 "--ood-data", "none", "--out", str(tmp_path / "run2"), "--eval-tokens", "128", "--seq-len", "32",
                 "--shapes", "1x16", "--repeats", "2", "--max-drop", "50%", "--runtime", "llamacpp", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    by_base = {v["is_baseline"]: v["metrics"] for v in data["variants"]}
    base, q8 = by_base[True], by_base[False]
    assert (base["runtime_precision"], base["runtime_as_brought"]) == ("q4_0", True)
    assert base["runtime_export"] == gg["main_file"] and base["runtime_disk_mb"] == pytest.approx(gg["files"]["model-q4_0.gguf"] / 1e6)
    assert (q8["runtime_precision"], q8["runtime_as_brought"]) == ("q8_0", False) and base["latency_p50_ms"] > 0


@pytest.fixture
def fresh_api(monkeypatch):
    """A fresh `slimlm.export.llamacpp.api()` for the test; the process's own one (and its log sink) after."""
    from slimlm.export import llamacpp

    old = llamacpp._api
    monkeypatch.setattr(llamacpp, "_api", None)
    yield llamacpp
    if old is not None:  # the test's api registered its own log sink: hand llama.cpp's log back to the old one
        old.lib.llama_log_set(old._sink, old.ffi.NULL)


def test_own_llamacpp_build_is_used_and_named(fresh_api, monkeypatch, tmp_path):
    import xllamacpp

    # any shared library with llama.cpp's C API stands for a user's build: here xllamacpp's own module file
    monkeypatch.setenv(fresh_api.LIB_ENV, xllamacpp.xllamacpp.__file__)
    assert fresh_api.available()
    assert fresh_api.describe() == f"llama.cpp (own build {xllamacpp.xllamacpp.__file__})"
    assert fresh_api.system_info().startswith("CPU :") and "AVX" in fresh_api.system_info()
    m = load("tiny:llama?merges=1&layers=2")
    path = export(m, "gguf", tmp_path / "g", precision="f32", check=True)
    assert path["check"]["passed"] and "own build" in path["check"]["reader"]
    # a build named per model (as bench/llamacpp_builds.py runs two at once) scores as the default one
    ids = list(range(4, 40))
    with fresh_api.LlamaCpp(path["main_file"], n_ctx=64) as default, \
            fresh_api.LlamaCpp(path["main_file"], n_ctx=64, library=xllamacpp.xllamacpp.__file__) as named:
        assert named._a is fresh_api.build(xllamacpp.xllamacpp.__file__) and named._a is not default._a
        np.testing.assert_allclose(named.logits(ids), default.logits(ids), atol=1e-5)
    with pytest.raises(ConfigError, match="is not a file"):
        fresh_api.build(str(tmp_path / "missing.so"))


def test_own_llamacpp_build_that_is_missing_is_one_clear_error(fresh_api, monkeypatch, tmp_path):
    from slimlm.export.runtimes import check_runtime

    monkeypatch.setenv(fresh_api.LIB_ENV, str(tmp_path / "nowhere" / "libllama.so"))
    with pytest.raises(ConfigError, match="SLIMLM_LLAMACPP_LIB=.*is not a file"):
        fresh_api.api()
    with pytest.raises(ConfigError, match="is not a file"):
        check_runtime("llamacpp")
    not_a_lib = tmp_path / "libllama.so"
    not_a_lib.write_text("not a library")
    monkeypatch.setenv(fresh_api.LIB_ENV, str(not_a_lib))
    with pytest.raises(ConfigError, match="could not load llama.cpp from"):
        fresh_api.api()


TEXT = "The theory of Ithaca, and 2024 naïve!  Two  spaces,\n\n\ttabs and 東京 😀"


@pytest.mark.parametrize("spec, prefix", [("tiny:mistral?spm=1", True), ("tiny:gemma3?spm=1", False),
                                          ("tiny:phi3?spm=1", True), ("tiny:qwen2?merges=1", False)])
def test_llamacpp_tokenizes_text_as_the_variant_for_sentencepiece_and_byte_level_vocabularies(spec, prefix, tmp_path):
    from slimlm.export.llamacpp import LlamaCpp
    from slimlm.models.loading import gguf_header

    m = load(f"{spec}&layers=2")
    r = export(m, "gguf", tmp_path / "g", precision="f32")
    spm = "spm=1" in spec
    assert r["tokenizer"]["model"] == ("llama" if spm else "gpt2")
    head = gguf_header(r["main_file"])
    assert head["tokenizer.ggml.model"] == r["tokenizer"]["model"]
    if spm:  # Gemma's SentencePiece adds no space before the text; Llama 2 / Mistral / Phi-3's does
        from gguf import GGUFReader

        assert GGUFReader(r["main_file"]).fields["tokenizer.ggml.add_space_prefix"].contents() is prefix
    tok = r["check"]["tokenizer"]
    assert tok["passed"] and tok["identical"] == tok["texts"] and tok["texts"] > len(TEXT.split("\n\n"))
    with LlamaCpp(r["main_file"], threads=1, n_ctx=64) as llm:
        assert llm.tokenize(TEXT) == m.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
        assert llm.tokenize(TEXT, add_special=True) == m.tokenizer(TEXT)["input_ids"]  # BOS as the variant adds it


def test_export_check_fails_when_llamacpp_would_read_the_tokenizer_differently(monkeypatch, tmp_path):
    # a SentencePiece vocabulary written as byte-level BPE (what slimlm did before reading the tokenizer's
    # kind): the logits on the same ids still match, but llama.cpp drops every space of a prompt
    from slimlm.export import gguf
    from slimlm.export.check import ExportCheckError

    real = gguf.tokenizer_kind
    monkeypatch.setattr(gguf, "tokenizer_kind", lambda j: {**real(j), "model": "gpt2", "pre": "default"})
    m = load("tiny:mistral?spm=1&layers=2")
    with pytest.raises(ExportCheckError, match="tokenizes .* check texts differently") as e:
        export(m, "gguf", tmp_path / "g", precision="f32")
    assert e.value.result["agreement"] < 0.5 and e.value.result["first_difference"]["variant"][0] == "\u2581"
    assert not (tmp_path / "g").exists()  # nothing is left behind
    r = export(m, "gguf", tmp_path / "kept", precision="f32", check=False)  # --no-check keeps it anyway
    assert r["check"] is None
