"""Runtime-aware profiling: a fixed, recorded thread count by default, the size of the file the user brought,
and the same protocol on ONNX Runtime / OpenVINO (llama.cpp when its binding is installed)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from slimlm.errors import ConfigError
from slimlm.export import export
from slimlm.models import load
from slimlm.profile import compare


def test_default_thread_count_is_fixed_and_recorded():
    r = compare([load("tiny:llama?layers=1")], shapes=((1, 16),), decode_tokens=0, repeats=1, warmup=0, memory=False)
    assert r[0]["threads"] == 1


def test_gguf_input_reports_the_file_brought_beside_its_fp32_size(tmp_path):
    res = export(load("tiny:llama?layers=2"), "gguf", tmp_path / "g", precision="q8_0", check=False)
    m = load(res["main_file"])
    r = compare([m], shapes=((1, 16),), decode_tokens=0, repeats=1, warmup=0, memory=True)[0]
    assert r["source_file_mb"] == pytest.approx(res["files"]["model-q8_0.gguf"] / 1e6)
    assert r["disk_mb"] > 2 * r["source_file_mb"]  # the fp32 re-save is larger than the q8_0 file
    assert r["ratios"]["disk_vs_source_file"] == pytest.approx(r["disk_mb"] / r["source_file_mb"])


def test_llamacpp_runtime_without_its_binding_says_how_to_install(monkeypatch):
    from slimlm.export.runtimes import compare_runtime

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else real(name, *a))
    monkeypatch.delenv("SLIMLM_LLAMACPP_LIB", raising=False)  # nor a build of the user's own
    with pytest.raises(ConfigError, match="xllamacpp.*SLIMLM_LLAMACPP_LIB"):
        compare_runtime([load("tiny:llama?layers=1")], "llamacpp")
    with pytest.raises(ConfigError, match="unknown runtime"):
        compare_runtime([load("tiny:llama?layers=1")], "tensorrt")


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                    reason="onnxruntime not installed: pip install 'slimlm[export]'")
def test_onnxruntime_profile_interleaves_and_reports_ratios():
    from slimlm.export.runtimes import compare_runtime

    res = compare_runtime([load("tiny:llama?layers=2"), load("tiny:llama?layers=1")], "onnxruntime",
                          shapes=((1, 16), (2, 16)), repeats=2, warmup=1, memory=True)
    for r in res:  # peak RSS from each export's own process, at the largest shape, with its decode
        assert r["memory_probe"]["shape"] == "2x16" and "error" not in r["memory_probe"]
        assert r["peak_rss_mb"] >= r["memory_probe"]["loaded_rss_mb"] > r["memory_probe"]["start_rss_mb"] > 0
    assert res[1]["ratios"]["peak_rss"] == pytest.approx(res[1]["peak_rss_mb"] / res[0]["peak_rss_mb"])
    for r in res:  # energy over the timed prefills (2 shapes x 2 repeats), as torch profiling does
        assert r["energy_j_per_1k_tokens"] > 0 and r["co2e_g_per_1k_tokens"] > 0 and r["energy_source"]
    assert res[1]["ratios"]["energy"] == pytest.approx(res[1]["energy_j_per_1k_tokens"] / res[0]["energy_j_per_1k_tokens"])
    assert [r["runtime"] for r in res] == ["onnxruntime"] * 2 and res[0]["threads"] == 1
    assert res[1]["disk_mb"] < res[0]["disk_mb"] and res[0]["latency_ms"]["1x16"]["n"] == 2
    assert res[1]["ratios"]["prefill_speedup_1x16"] > 0
    assert res[0]["decode_tokens_per_s"] > 0 and res[1]["ratios"]["decode_speedup"] > 0  # the KV-cache graph


def _decoders(hf, tmp_path):
    from slimlm.export.onnx import OrtDecoder, onnx_logits_fn, write_onnx
    from slimlm.export.openvino import OvDecoder, openvino_logits_fn, write_openvino

    path, info = write_onnx(hf, tmp_path, "fp32")
    assert info["kv_cache"]
    yield "onnxruntime", OrtDecoder(path), onnx_logits_fn(path), 1e-4
    (tmp_path / "ov").mkdir()
    ov_path, _ = write_openvino(hf, tmp_path / "ov", "fp32")
    # f32 asked for: the CPU plugin's own default is bf16 where the CPU has it; the check's function asks too
    dec, check = OvDecoder(ov_path, precision_hint="f32"), openvino_logits_fn(ov_path)
    assert dec.inference_precision == check.inference_precision == "f32"
    yield "openvino", dec, check, 1e-4


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("openvino") is None,
                    reason="onnxruntime/openvino not installed: pip install 'slimlm[export]'")
@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_onnx_and_openvino_decode_token_by_token_matches_the_full_forward(arch, tmp_path):
    m = load(f"tiny:{arch}?layers=2")
    if arch == "gemma2":  # a window shorter than the sequence: the mask, not the cache, must apply it
        m.hf.config.sliding_window = 4
    ids = torch.randint(0, m.hf.config.vocab_size, (2, 14), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = m.hf(ids).logits
    for name, dec, prefill, tol in _decoders(m.hf, tmp_path):
        assert torch.allclose(prefill(ids), ref, atol=tol), name  # an empty past: batch 2 prefill
        assert dec.n_vocab == m.hf.config.vocab_size
        for rows in (ids[:1], ids):  # the profile's prefill: one loaded model (OpenVINO: stateful for one row)
            assert torch.allclose(dec.logits(rows), ref[: len(rows)], atol=tol), name
        for _ in range(2):  # reset() starts a new sequence
            dec.reset()
            got = [dec.eval(ids[1, :8].tolist())] + [dec.eval([int(t)]) for t in ids[1, 8:]]
            assert torch.allclose(torch.as_tensor(np.stack(got)), ref[1, 7:], atol=tol), name


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                    reason="onnxruntime not installed: pip install 'slimlm[export]'")
def test_an_onnx_export_without_a_kv_graph_still_prefills_but_has_no_decode(tmp_path):
    from slimlm.export.runtimes import _Session

    hf = load("tiny:llama?layers=1").hf.eval()

    class Logits(torch.nn.Module):  # the graph slimlm wrote before the KV cache: input_ids -> logits
        def __init__(self):
            super().__init__()
            self.hf = hf

        def forward(self, input_ids):
            return self.hf(input_ids=input_ids, use_cache=False).logits

    ids = torch.randint(0, 100, (1, 6))
    with torch.no_grad():
        prog = torch.onnx.export(Logits(), (ids,), dynamo=True, input_names=["input_ids"], output_names=["logits"],
                                 dynamic_shapes=({1: torch.export.Dim("seq", min=2, max=64)},), verbose=False)
    prog.save(str(tmp_path / "old.onnx"))
    s = _Session("onnxruntime", tmp_path / "old.onnx", 1, 64)
    assert s.decode is None
    with torch.no_grad():
        assert torch.allclose(s.prefill(ids), hf(ids).logits, atol=1e-4)


def test_each_quantization_scheme_maps_to_the_runtimes_own_type_or_a_reason():
    from slimlm.export.runtimes import runtime_type
    from slimlm.quantize import Int4WeightConfig, Int8DynamicConfig, Int8WeightConfig, quantize_

    want = {  # scheme -> runtime -> the runtime's type (None: refused with a reason)
        None: {"onnxruntime": "fp32", "openvino": "fp32", "llamacpp": "f16"},
        "int8-dynamic": {"onnxruntime": "int8", "openvino": None, "llamacpp": None},
        "int8-weight": {"onnxruntime": None, "openvino": "int8", "llamacpp": "q8_0"},
        "int4-weight": {"onnxruntime": None, "openvino": "int4", "llamacpp": "q4_1"},
    }
    configs = {None: None, "int8-dynamic": Int8DynamicConfig(), "int8-weight": Int8WeightConfig(),
               "int4-weight": Int4WeightConfig(method="rtn", group_size=16)}
    for scheme, cfg in configs.items():
        m = load("tiny:llama?layers=1")
        if cfg is not None:
            quantize_(m, cfg)
        for runtime, expected in want[scheme].items():
            kind, why = runtime_type(m, runtime)
            assert kind == expected, (scheme, runtime)
            assert (why is None) == (expected is not None)
            if why:
                assert scheme in why and runtime in why


def test_search_skips_a_trial_whose_quantization_the_runtime_cannot_take_before_running_it():
    from slimlm.recipes.recipe import recipe_from_dict
    from slimlm.search.study import _runtime_refuses

    def recipe(q):
        return recipe_from_dict({"name": "r", "stages": [{"prune": {"method": "structured", "layers": 1}}, {"quantize": q}]})

    assert _runtime_refuses(recipe({"scheme": "int4-weight"}), "onnxruntime")
    assert _runtime_refuses(recipe({"scheme": "int8-dynamic"}), "onnxruntime") is None
    assert "int8-dynamic" in _runtime_refuses(recipe({"scheme": "int8-dynamic"}), "llamacpp")
    qat = {"scheme": "qat", "target": {"scheme": "int8-dynamic"}, "steps": 1}
    assert "int8-dynamic" in _runtime_refuses(recipe(qat), "openvino")
    assert _runtime_refuses(recipe({"scheme": "int4-weight"}), "torch") is None


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("openvino") is None,
                    reason="onnxruntime/openvino not installed: pip install 'slimlm[export]'")
def test_encoders_profile_on_onnxruntime_and_openvino_and_llamacpp_refuses_them(tmp_path):
    from slimlm.export.runtimes import _Session, compare_runtime, runtime_export, runtime_type

    big, small = load("tiny:bert"), load("tiny:bert?layers=1")
    for runtime in ("onnxruntime", "openvino"):
        res = compare_runtime([big, small], runtime, shapes=((2, 16),), repeats=2, warmup=1, decode_tokens=4)
        assert [r["precision"] for r in res] == ["fp32", "fp32"]
        assert res[0]["latency_ms"]["2x16"]["n"] == 2 and res[1]["ratios"]["prefill_speedup_2x16"] > 0
        assert res[1]["disk_mb"] < res[0]["disk_mb"]
        assert all(r["decode_tokens_per_s"] is None for r in res)  # an encoder does not decode
        assert (res[0]["inference_precision"] in ("f32", "bf16", "f16")) == (runtime == "openvino")
    # the session feeds what the graph takes: its output is the encoder's
    exp = runtime_export(big, "onnxruntime", tmp_path / "e")
    ids = torch.randint(5, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = big.hf(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    assert torch.allclose(_Session("onnxruntime", Path(exp["main_file"]), 1, 64, big.task).prefill(ids), ref, atol=1e-4)
    kind, why = runtime_type(big, "llamacpp")
    assert kind is None and "onnxruntime or openvino" in why
    with pytest.raises(ConfigError, match="onnxruntime or openvino"):  # --type does not change that
        runtime_export(big, "llamacpp", tmp_path / "g", precision="f16")
