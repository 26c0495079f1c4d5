"""quantize_ on tiny models: quality against fp32, what is skipped, and save -> load giving identical outputs."""

import pytest
import torch
from torch import nn

from slimlm.errors import ConfigError
from slimlm.models import load
from slimlm.models.qlayers import Int4Embedding, Int8Embedding, QuantModule
from slimlm.models.qmath import sqnr
from slimlm.quantize import (
    FallbackConfig,
    Int4WeightConfig,
    Int8DynamicConfig,
    Int8WeightConfig,
    describe,
    logical_params,
    quantize_,
    save,
)

TINY = "tiny:llama?layers=2&hidden=64&heads=4&kv_heads=2&ffn=128&seed=0"

CASES = [
    (Int8DynamicConfig(), 30.0),
    (Int8DynamicConfig(smoothquant=0.5), 30.0),
    (Int8WeightConfig(), 35.0),
    (Int4WeightConfig(method="rtn", group_size=16), 18.0),
    (Int4WeightConfig(method="gptq", group_size=16), 18.0),
]


@pytest.mark.parametrize("config, threshold", CASES, ids=lambda c: getattr(c, "scheme", ""))
def test_logits_sqnr_and_reload_identical(tiny, ids, calib, tmp_path, config, threshold):
    with torch.inference_mode():
        ref = tiny.hf(ids).logits
    params = tiny.num_params()
    report = quantize_(tiny, config, calib)
    assert report["quantized"] == 14  # 7 Linears in each of 2 blocks; lm_head and embeddings stay fp32
    assert isinstance(tiny.hf.lm_head, nn.Linear) and isinstance(tiny.hf.model.embed_tokens, nn.Embedding)
    assert tiny.num_params() == params == logical_params(tiny.hf)
    with torch.inference_mode():
        out = tiny.hf(ids).logits
    assert sqnr(ref, out) > threshold
    path = save(tiny, tmp_path / "q", config, report)
    back = load(path)
    assert describe(back.hf) == describe(tiny.hf)
    with torch.inference_mode():
        assert torch.equal(back.hf(ids).logits, out)
    assert back.hash == tiny.hash


def test_lm_head_and_embeddings_on_request_tied_model(tiny, ids, tmp_path):
    assert tiny.hf.lm_head.weight is tiny.hf.model.embed_tokens.weight
    with torch.inference_mode():
        ref = tiny.hf(ids).logits
    report = quantize_(tiny, Int8DynamicConfig(skip=()))
    assert report["quantized"] == 16
    assert isinstance(tiny.hf.model.embed_tokens, Int8Embedding) and isinstance(tiny.hf.lm_head, QuantModule)
    with torch.inference_mode():
        out = tiny.hf(ids).logits
    assert sqnr(ref, out) > 25
    back = load(save(tiny, tmp_path / "q", Int8DynamicConfig(skip=())))
    with torch.inference_mode():
        assert torch.equal(back.hf(ids).logits, out)


@pytest.mark.parametrize("config", [Int8DynamicConfig(skip=()), Int8WeightConfig(skip=())], ids=lambda c: c.scheme)
def test_tied_model_stays_one_matrix_when_both_ends_are_int8(tiny, ids, tmp_path, config):
    """Quantizing a tied model's embeddings and lm_head to int8 keeps one (vocab, hidden) matrix: the table is
    the head's int8 weight, counted and saved once, and it comes back shared after a reload."""
    params = tiny.num_params()
    emb_numel = tiny.hf.model.embed_tokens.weight.numel()
    report = quantize_(tiny, config)
    emb, head = tiny.hf.model.embed_tokens, tiny.hf.lm_head
    assert report["tied"] == ["model.embed_tokens", "lm_head"]
    assert emb.qweight.data_ptr() == head.qweight.data_ptr() and emb.scale.data_ptr() == head.scale.data_ptr()
    assert tiny.num_params() == params == logical_params(tiny.hf)  # as the fp32 parent counts it: once
    with torch.inference_mode():
        out = tiny.hf(ids).logits
    path = save(tiny, tmp_path / "q", config, report)
    on_disk = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    assert "tied" not in quantize_(load(TINY), type(config)(skip=("lm_head",)))  # head kept fp32: apart
    back = load(path)
    b_emb, b_head = back.hf.model.embed_tokens, back.hf.lm_head
    assert isinstance(b_emb, Int8Embedding) and b_emb.tied_to == "lm_head"
    assert b_emb.qweight.data_ptr() == b_head.qweight.data_ptr()
    with torch.inference_mode():
        assert torch.equal(back.hf(ids).logits, out)
    assert back.num_params() == params
    # copied or moved, the table stays the head's tensors (buffers would be converted one by one, into two)
    import copy

    moved = copy.deepcopy(back.hf).to(torch.float64)
    m_emb, m_head = moved.model.embed_tokens, moved.lm_head
    assert m_emb.qweight.data_ptr() == m_head.qweight.data_ptr() != b_head.qweight.data_ptr()
    assert m_emb.scale.dtype == torch.float64 and m_emb.scale.data_ptr() == m_head.scale.data_ptr()
    assert not dict(m_emb.named_buffers())
    # the file holds the int8 matrix once: a copy of the table (as before) costs its int8 bytes again
    back.hf.model.embed_tokens = Int8Embedding(b_emb.qweight.clone(), b_emb.scale.clone(), b_emb.padding_idx)
    twice = save(back, tmp_path / "twice")
    assert sum(f.stat().st_size for f in twice.glob("*.safetensors")) - on_disk >= emb_numel
    assert back.num_params() == params + emb_numel


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_tied_model_stays_one_matrix_when_the_head_is_int4(tiny, ids, calib, tmp_path, method):
    """With an int4 lm_head (RTN or GPTQ), a tied model's table is the head's packed weight: each lookup
    dequantizes the rows it gathers, exactly the head's values; counted and saved once, linked again on load."""
    params = tiny.num_params()
    table = tiny.hf.model.embed_tokens.weight.detach().clone()
    config = Int4WeightConfig(method=method, group_size=16, skip=())
    report = quantize_(tiny, config, calib)
    emb, head = tiny.hf.model.embed_tokens, tiny.hf.lm_head
    assert report["tied"] == ["model.embed_tokens", "lm_head"] and isinstance(emb, Int4Embedding)
    assert emb.qweight.data_ptr() == head.qweight.data_ptr() and not dict(emb.named_buffers())
    assert torch.equal(emb(ids), head.dequantized()[ids])
    assert sqnr(table[ids], emb(ids)) > 12  # the rows are the fp32 table's, on a 4-bit grid
    apart = quantize_(load(TINY), Int4WeightConfig(method=method, group_size=16, skip=(), tied_table="int8"), calib)
    assert "tied" not in apart  # asked for: the table keeps its own int8 copy
    assert Int4WeightConfig(skip=(), tied_table="int8").label().endswith("+lm_head+embed (int8 table)")
    assert Int4WeightConfig(kernel="int4pack").label() == "int4-weight g32 gptq int4pack"
    assert Int4WeightConfig().label() == "int4-weight g32 gptq"
    assert tiny.num_params() == params == logical_params(tiny.hf)
    with torch.inference_mode():
        out = tiny.hf(ids).logits
    path = save(tiny, tmp_path / "q", config, report)
    back = load(path)
    b_emb = back.hf.model.embed_tokens
    assert isinstance(b_emb, Int4Embedding) and b_emb.tied_to == "lm_head"
    assert b_emb.qweight.data_ptr() == back.hf.lm_head.qweight.data_ptr()
    with torch.inference_mode():
        assert torch.equal(back.hf(ids).logits, out)
    assert back.num_params() == params
    # what it saves on disk: the int8 table the model held before (one byte per weight, plus row scales)
    on_disk = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    back.hf.model.embed_tokens = Int8Embedding.from_float(torch.nn.Embedding.from_pretrained(table))
    apart = save(back, tmp_path / "apart")
    assert sum(f.stat().st_size for f in apart.glob("*.safetensors")) - on_disk >= table.numel()


@pytest.mark.parametrize("scheme", ["int4-weight", "int8-weight"])
def test_qat_trains_a_tied_table_with_its_head_and_it_reloads(tiny, ids, calib, tmp_path, scheme):
    """QAT replaces the head with a trained one: the tied table must follow it (not keep reading the PTQ
    head), so the model in memory and the one reloaded from disk compute the same logits."""
    from slimlm.quantize import QATConfig

    target = (Int4WeightConfig(method="rtn", group_size=16, skip=()) if scheme == "int4-weight"
              else Int8WeightConfig(skip=()))
    cfg = QATConfig(target=target, steps=3, lr=1e-3, batch_size=4, holdout=4)
    before = tiny.hf.model.embed_tokens.weight.detach().clone()
    report = quantize_(tiny, cfg, calib)
    assert report["qat"]["trained"]
    emb, head = tiny.hf.model.embed_tokens, tiny.hf.lm_head
    assert emb.tied_to == "lm_head" and emb.qweight.data_ptr() == head.qweight.data_ptr()
    values = head.dequantized() if hasattr(head, "dequantized") else head.qweight.float() * head.scale[:, None]
    assert torch.equal(emb(ids), values[ids])  # the table reads the head it ended with
    if "kept" not in report["qat"]:  # trained (not the PTQ layers kept back)
        assert not torch.allclose(emb(ids), before[ids], atol=1e-3)
    with torch.inference_mode():
        out = tiny.hf(ids).logits
    back = load(save(tiny, tmp_path / "q", cfg, report))
    with torch.inference_mode():
        assert torch.equal(back.hf(ids).logits, out)


def test_embeddings_only_unties_lm_head(tiny, ids, tmp_path):
    quantize_(tiny, Int8WeightConfig(skip=("lm_head",)))
    assert isinstance(tiny.hf.model.embed_tokens, Int8Embedding)
    assert isinstance(tiny.hf.lm_head, nn.Linear) and tiny.hf.lm_head.weight.dtype == torch.float32
    with torch.inference_mode():
        out = tiny.hf(ids).logits
    back = load(save(tiny, tmp_path / "q"))
    with torch.inference_mode():
        assert torch.equal(back.hf(ids).logits, out)


def test_disk_size_is_honest(tmp_path):
    spec = "tiny:llama?layers=2&hidden=128&heads=4&kv_heads=2&ffn=256"
    sizes = {}
    for name, cfg in [("int8", Int8WeightConfig()), ("int4", Int4WeightConfig(method="rtn", group_size=32))]:
        m = load(spec)
        quantize_(m, cfg)
        sizes[name] = (save(m, tmp_path / name) / "slimlm-quantized.safetensors").stat().st_size
    m = load(spec)
    sizes["fp32"] = (save(m, tmp_path / "fp32") / "model.safetensors").stat().st_size
    block = sum(lin.weight.numel() for lin in m.adapter.block_linears().values())
    # the quantized layers shrink by ~3 bytes per weight (int8) and ~3.4 bytes per weight (int4 + scales)
    assert sizes["fp32"] - sizes["int8"] == pytest.approx(3 * block, rel=0.05)
    assert sizes["fp32"] - sizes["int4"] == pytest.approx((4 - 0.5 - 3 / 32) * block, rel=0.05)


def test_bert_classifier_int8_dynamic(ids, tmp_path):
    m = load("tiny:bert?labels=3")
    x = torch.randint(5, 250, (2, 20))
    with torch.inference_mode():
        ref = m.hf(x).logits
    report = quantize_(m, Int8DynamicConfig())
    assert report["quantized"] == 4 * 6 and isinstance(m.hf.classifier, nn.Linear)
    with torch.inference_mode():
        out = m.hf(x).logits
    assert sqnr(ref, out) > 25
    back = load(save(m, tmp_path / "b"))
    with torch.inference_mode():
        assert torch.equal(back.hf(x).logits, out)


def test_smoothquant_alone_preserves_the_function(tiny, ids, calib):
    from slimlm.calibration import InputStats, run_batches
    from slimlm.quantize.smoothquant import smooth_

    lin = tiny.adapter.block_linears()
    with torch.inference_mode():
        ref = tiny.hf(ids).logits
    with InputStats(lin, absmax=True) as st:
        run_batches(tiny.hf, calib)
    with torch.no_grad():
        n = smooth_(tiny.adapter, {id(m): st.act_absmax(k) for k, m in lin.items()}, 0.5)
    assert n == 2 * 3  # norm->qkv, norm->gate/up, up->down per block (o is skipped under GQA)
    with torch.inference_mode():
        assert torch.allclose(tiny.hf(ids).logits, ref, atol=1e-4, rtol=1e-4)


def test_fallback_meets_tolerance_and_reports_frontier(tiny, calib):
    report = quantize_(tiny, Int4WeightConfig(method="rtn", group_size=16,
                                              fallback=FallbackConfig(tolerance=2e-5, holdout=4)), calib)
    fb = report["fallback"]
    assert fb["met"] and fb["ppl_ratio"] <= 1 + 2e-5
    assert fb["frontier"][0]["fp32_layers"] == 0 and fb["frontier"][0]["ppl_ratio"] > 1 + 2e-5
    assert len(report["fp32_layers"]) >= 1 and report["quantized"] == 14 - len(report["fp32_layers"])
    kept = dict(tiny.hf.named_modules())
    assert all(isinstance(kept[n], nn.Linear) for n in report["fp32_layers"])


def test_exclude_keeps_named_layers(tiny):
    report = quantize_(tiny, Int8DynamicConfig(exclude=("down_proj",)))
    assert report["quantized"] == 12
    assert all(isinstance(layer.mlp.down_proj, nn.Linear) for layer in tiny.adapter.layers())


def test_reload_is_independent_of_spec(tiny, ids, tmp_path):
    import json
    import shutil

    quantize_(tiny, Int8DynamicConfig())
    with torch.inference_mode():
        out = tiny.hf(ids).logits
    save(tiny, tmp_path / "a", config=Int8DynamicConfig())
    meta_file = tmp_path / "a" / "slimlm.json"
    text = meta_file.read_text()
    assert TINY in text  # the parent spec is recorded...
    meta_file.write_text(text.replace(TINY, "tiny:nonexistent?layers=99"))  # ...but not needed to reload
    shutil.move(tmp_path / "a", tmp_path / "moved")
    back = load(tmp_path / "moved")
    with torch.inference_mode():
        assert torch.equal(back.hf(ids).logits, out)
    assert json.loads((tmp_path / "moved" / "slimlm.json").read_text())


@pytest.mark.parametrize("record", [[1], {"format": 99}, {"layers": 3}])
def test_a_hand_edited_quantization_record_is_one_model_file_error(tiny, tmp_path, record):
    import json

    from slimlm.errors import ModelFileError

    quantize_(tiny, Int8DynamicConfig())
    save(tiny, tmp_path / "a", config=Int8DynamicConfig())
    meta_file = tmp_path / "a" / "slimlm.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "quantization": record}))
    with pytest.raises(ModelFileError, match="not supported by this slimlm" if record == {"format": 99}
                       else "not one slimlm wrote"):
        load(tmp_path / "a")


def test_profile_counts_quantized_bytes(tiny):
    from slimlm.profile import decode_bytes_per_token

    fp32 = decode_bytes_per_token(tiny, 16)
    quantize_(tiny, Int4WeightConfig(method="rtn", group_size=16, skip=("embed",)))
    assert decode_bytes_per_token(tiny, 16) < 0.2 * fp32 + 2 * 2 * 2 * 16 * 16 * 4  # packed int4 + fp32 KV cache


def test_lm_head_only_on_tied_model_reloads(tiny, ids, tmp_path):
    quantize_(tiny, Int8DynamicConfig(skip=("embed",)))
    assert isinstance(tiny.hf.lm_head, QuantModule) and isinstance(tiny.hf.model.embed_tokens, nn.Embedding)
    with torch.inference_mode():
        out = tiny.hf(ids).logits
    back = load(save(tiny, tmp_path / "q"))
    assert isinstance(back.hf.lm_head, QuantModule)
    with torch.inference_mode():
        assert torch.equal(back.hf(ids).logits, out)


def test_nonzero_count_sees_quantized_weights_and_pruned_zeros(tiny):
    from slimlm.profile.core import _nonzero

    lin = tiny.hf.model.layers[0].mlp.up_proj
    with torch.no_grad():
        lin.weight[:, ::2] = 0  # half of one layer's weights pruned
    before = _nonzero(tiny)
    quantize_(tiny, Int8DynamicConfig())
    assert isinstance(tiny.hf.model.layers[0].mlp.up_proj, QuantModule)
    # symmetric int8 keeps every pruned zero; a few tiny weights may round to zero as well
    after = _nonzero(tiny)
    assert before - 0.01 * before <= after <= before


def test_flops_and_bytes_accept_torch_ao_dynamic_linears(tiny):
    from slimlm.profile import decode_bytes_per_token, prefill_flops

    fp32_flops, fp32_bytes = prefill_flops(tiny, 1, 16), decode_bytes_per_token(tiny, 16)
    tiny.hf = torch.ao.quantization.quantize_dynamic(tiny.hf, {nn.Linear}, dtype=torch.qint8)
    assert prefill_flops(tiny, 1, 16) == fp32_flops  # same matmuls, weight() is a method there
    assert decode_bytes_per_token(tiny, 16) < fp32_bytes


def test_a_fully_quantized_model_is_profiled(tiny):
    from slimlm.profile import compare

    quantize_(tiny, Int8DynamicConfig(skip=()))  # embeddings become Int8Embedding (no .weight)
    assert isinstance(tiny.hf.model.embed_tokens, Int8Embedding)
    r = compare([tiny], shapes=((1, 8),), decode_tokens=2, repeats=1, warmup=1, memory=False)[0]
    assert r["latency_ms"]["1x8"]["p50"] > 0 and r["params"] == tiny.num_params()


def test_int4pack_kernel_from_the_config_survives_save_and_load(tiny, ids, tmp_path):
    from slimlm.models.qlayers import Int4WeightLinear

    ref = load(TINY)
    quantize_(ref, Int4WeightConfig(method="rtn", group_size=32))
    quantize_(tiny, Int4WeightConfig(method="rtn", group_size=32, kernel="int4pack"))
    mods = [m for m in tiny.hf.modules() if isinstance(m, Int4WeightLinear)]
    assert mods and all(m.kernel == "int4pack" for m in mods)
    with torch.inference_mode():
        fast, exact = tiny.hf(ids).logits, ref.hf(ids).logits
    assert sqnr(exact, fast) > 25  # same weights; only the bf16 activations differ
    back = load(save(tiny, tmp_path / "q4"))
    assert all(m.kernel == "int4pack" for m in back.hf.modules() if isinstance(m, Int4WeightLinear))
    with torch.inference_mode():
        assert torch.equal(back.hf(ids).logits, fast)


def test_int4pack_keeps_dequant_on_layers_it_cannot_take_and_says_which(tiny, ids, tmp_path):
    """torch's int4pack layout needs output widths divisible by 16: the tiny model's lm_head (260 tokens)
    keeps the dequant kernel (listed in the report, with a warning) instead of failing after the quantization
    work, and the per-layer kernels survive save and load. A group size int4pack cannot take fails first."""
    from slimlm.models.qlayers import Int4WeightLinear

    report = quantize_(tiny, Int4WeightConfig(method="rtn", group_size=32, kernel="int4pack", skip=("embed",)))
    kernels = {n: q.kernel for n, q in tiny.hf.named_modules() if isinstance(q, Int4WeightLinear)}
    assert kernels.pop("lm_head") == "dequant" and kernels and set(kernels.values()) == {"int4pack"}
    assert report["dequant_layers"] == ["lm_head"]
    assert "1 layer(s) keep the dequant kernel" in report["warning"] and "lm_head has 260" in report["warning"]
    with torch.inference_mode():
        before = tiny.hf(ids).logits
    back = load(save(tiny, tmp_path / "q4"))
    assert {n: q.kernel for n, q in back.hf.named_modules() if isinstance(q, Int4WeightLinear)} == {
        **kernels, "lm_head": "dequant"}
    with torch.inference_mode():
        assert torch.equal(back.hf(ids).logits, before)
    with pytest.raises(ValueError, match="divisible by 16"):
        back.hf.lm_head.set_kernel("int4pack")
    plain = quantize_(load(TINY), Int4WeightConfig(method="rtn", group_size=32, skip=("embed",)))
    assert "dequant_layers" not in plain and "warning" not in plain  # dequant asked for: nothing to report
    with pytest.raises(ConfigError, match="int4pack kernel takes group sizes 32, 64, 128, 256, not 16"):
        quantize_(load(TINY), Int4WeightConfig(method="rtn", group_size=16, kernel="int4pack"))


def test_an_incomplete_quantized_directory_is_an_error_not_garbage(tiny, tmp_path):
    """The skeleton of a quantized variant is built without initialising its weights (so the fp32 matrices
    that quantized layers replace never take memory): a tensor missing from the files must then be an
    error, and a quantized layer missing from them too."""
    from safetensors.torch import load_file, save_file

    from slimlm.errors import ModelFileError

    quantize_(tiny, Int8WeightConfig())
    path = save(tiny, tmp_path / "q")
    (f,) = path.glob("*.safetensors")
    tensors = load_file(str(f))
    norm = next(k for k in tensors if k.endswith("input_layernorm.weight"))
    save_file({k: v for k, v in tensors.items() if k != norm}, str(f), metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="missing from the weights.*layernorm"):
        load(path)
    save_file({k: v for k, v in tensors.items() if not k.startswith("model.layers.0.mlp.down_proj.")}, str(f),
              metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="down_proj.*missing"):
        load(path)
    save_file({k: v for k, v in tensors.items() if k != "model.norm.weight"}, str(f), metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="missing from the weights.*model.norm.weight"):
        load(path)  # a module of its own at the top of the base model: still a hole, not an absent part


@pytest.mark.parametrize("spec", ["tiny:bert", "tiny:bert?labels=3"])
def test_quantized_encoder_reloads_exactly(spec, tmp_path):
    """An encoder saved without a pooler reloads (the skeleton's pooler is initialised, as from_pretrained
    does, not left uninitialised and not taken for a missing tensor), embeddings included."""
    m = load(spec)
    ids = torch.randint(5, 250, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = m.hf(ids)[0]
    report = quantize_(m, Int8WeightConfig(skip=()))
    with torch.inference_mode():
        out = m.hf(ids)[0]
    assert sqnr(ref, out) > 30 and isinstance(m.adapter.embeddings(), Int8Embedding)
    back = load(save(m, tmp_path / "q", Int8WeightConfig(skip=()), report))
    with torch.inference_mode():
        assert torch.equal(back.hf(ids)[0], out)


@pytest.mark.parametrize("config", [Int8DynamicConfig(), Int4WeightConfig(method="rtn", group_size=16)],
                         ids=lambda c: c.scheme)
def test_a_quantized_model_is_in_eval_mode(config):
    m = load(TINY)
    quantize_(m, config)
    assert not [n for n, mod in m.hf.named_modules() if mod.training]  # the new modules too


def test_a_quantized_variant_whose_config_does_not_fit_its_weights_is_one_model_file_error(tiny, tmp_path):
    import json

    from slimlm.errors import ModelFileError

    quantize_(tiny, Int8DynamicConfig())
    path = save(tiny, tmp_path / "q", config=Int8DynamicConfig())
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "hidden_size": 2 * config["hidden_size"]}))
    with pytest.raises(ModelFileError, match=r"size mismatch for .*the config does not belong to these weights"):
        load(path)
