"""Every supported decoder architecture, table-driven: load, evaluate, every prune method, quantize, distill,
save and reload with plain transformers. Each tiny model switches its family's quirks on (Qwen2 biases,
Qwen3 q/k norms, Gemma's scaled embeddings, four norms and soft-capping, Phi-3's fused projections)."""


import pytest
import torch
from transformers import AutoModelForCausalLM

from slimlm.data import pack
from slimlm.distill import DistillConfig, distill_run
from slimlm.evaluate import evaluate
from slimlm.models import Model, load, save
from slimlm.models.qmath import sqnr
from slimlm.models.tiny import byte_tokenizer
from slimlm.prune import Calibration, MagnitudeConfig, SparseGPTConfig, WandaConfig, parse_structured, prune_
from slimlm.prune import save_kwargs as prune_save_kwargs
from slimlm.quantize import Int4WeightConfig, Int8DynamicConfig, Int8WeightConfig, quantize_
from slimlm.quantize.smoothquant import smooth_
from slimlm.testing.students import small_corpus

ARCHS = ["llama", "qwen2", "qwen3", "gemma2", "gemma3", "mistral", "phi3"]
TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2", "gemma3": "gemma3_text",
         "mistral": "mistral", "phi3": "mistral"}




@pytest.fixture(scope="module")
def corpus():
    return small_corpus(chars=6_000, plays=2)


def _tiny(arch: str, **opts) -> Model:
    q = "&".join(f"{k}={v}" for k, v in {"layers": 3, **opts}.items())
    return load(f"tiny:{arch}?{q}")


def _calib(model: Model, corpus) -> Calibration:
    rows = pack(model.tokenizer, corpus.texts("calibration"), 32)[:8]
    return Calibration(rows, texts=corpus.texts("train"), batch_size=4)


def _logits(hf, ids):
    with torch.inference_mode():
        return hf(input_ids=ids).logits


IDS = torch.randint(4, 250, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ARCHS)
def test_loads_with_its_family_quirks_and_plain_transformers_reloads_it(arch, tmp_path):
    m = _tiny(arch)
    assert m.hf.config.model_type == TYPES[arch] and m.task == "causal-lm"
    a = m.adapter
    layer = a.layers()[0]
    assert (a.num_heads, a.num_kv_heads, a.head_dim) == (4, 2, 16)
    assert (a.attention(layer).q.bias is not None) == (arch == "qwen2")
    assert len(a.norms(layer)) == (4 if arch.startswith("gemma") else 2)
    save(m, tmp_path / "v")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "v").eval()
    assert plain.config.model_type == TYPES[arch]
    assert torch.equal(_logits(plain, IDS), _logits(m.hf, IDS))
    assert load(tmp_path / "v").hash == m.hash


def test_phi3_directory_loads_split_into_mistral_with_the_same_function(tmp_path):
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    cfg = Phi3Config(vocab_size=260, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0)
    phi = Phi3ForCausalLM(cfg).eval()
    phi.save_pretrained(tmp_path / "phi")
    byte_tokenizer("phi3").save_pretrained(tmp_path / "phi")
    m = load(tmp_path / "phi")
    assert m.hf.config.model_type == "mistral" and m.adapter.attention(m.adapter.layers()[0]).k.out_features == 32
    torch.testing.assert_close(_logits(m.hf, IDS), _logits(phi, IDS), rtol=1e-5, atol=1e-5)


def test_unsupported_phi3_rope_is_refused_before_weights(tmp_path):
    from slimlm.errors import UnsupportedModelError

    (tmp_path / "config.json").write_text('{"model_type": "phi3", "partial_rotary_factor": 0.75}')
    with pytest.raises(UnsupportedModelError, match="partial rotary"):
        load(tmp_path)  # no weight file at all: the refusal must come first
    (tmp_path / "config.json").write_text('{"model_type": "gemma3"}')
    with pytest.raises(UnsupportedModelError, match="gemma3_text"):
        load(tmp_path)


@pytest.mark.parametrize("arch", ARCHS)
def test_layer_runner_replays_each_blocks_own_mask_and_rope(arch):
    """Block by block, the runner must reproduce the full forward (Gemma alternates sliding/global layers)."""
    from slimlm.prune.calibrate import LayerRunner

    m = _tiny(arch)
    ids = torch.randint(4, 250, (2, 40), generator=torch.Generator().manual_seed(1))  # > sliding window 16
    runner = LayerRunner(m, ids, batch_size=2)
    for layer in m.adapter.layers():
        runner.advance(layer)
    with torch.inference_mode():
        ref = m.hf(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[-1]
    torch.testing.assert_close(m.adapter.final_norm()(runner.hidden[0]), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_evaluate_agrees_with_plain_hf_loss(arch, corpus):
    m = _tiny(arch)
    r = evaluate(m, corpus, seq_len=64, max_tokens=256)
    windows = pack(m.tokenizer, corpus.texts("eval"), 64)[:4]
    with torch.inference_mode():
        ref = torch.exp(m.hf(input_ids=windows, labels=windows).loss).item()
    assert r["perplexity"] > 1 and abs(r["perplexity"] - ref) / ref < 0.5  # same order: budgets differ


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tied", [0, 1])
def test_structured_surgery_every_kind_reloads_in_plain_transformers(arch, tied, corpus, tmp_path):
    m = _tiny(arch, tied=tied)
    cfg = parse_structured("layers=1,heads=0.5,ffn=0.25,hidden=0.25")
    report = prune_(m, cfg, _calib(m, corpus))
    d = m.adapter.describe()
    assert (d["layers"], d["heads"], d["kv_heads"], d["intermediate_size"], d["hidden_size"], d["head_dim"]) == \
        (2, 2, 1, 96, 48, 16)  # one whole KV group with its query heads; head_dim kept
    assert report["params_after"] < report["params_before"]
    assert m.hf.config.tie_word_embeddings == bool(tied)
    save(m, tmp_path / "v", **prune_save_kwargs(cfg, report, m))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "v").eval()
    assert plain.num_parameters() == m.num_params()
    torch.testing.assert_close(_logits(plain, IDS), _logits(m.hf, IDS), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["gemma2", "gemma3"])
def test_gemma_embed_scale_follows_the_pruned_width(arch, corpus):
    m = _tiny(arch, tied=0)
    emb_before = m.adapter.embeddings()
    x = emb_before(IDS[:1])  # (1, T, 64), already multiplied by sqrt(64)
    prune_(m, parse_structured("hidden=0.25"), _calib(m, corpus))
    emb = m.adapter.embeddings()
    assert float(emb.embed_scale) == pytest.approx(48 ** 0.5)
    # untied: the kept channels' embedded values are what they were before surgery
    kept = emb(IDS[:1])
    assert torch.isclose(kept.norm(dim=-1).mean() / x.norm(dim=-1).mean(), torch.tensor((48 / 64) ** 0.5),
                         rtol=0.2)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("config", [MagnitudeConfig(sparsity=0.5), WandaConfig(sparsity=0.5),
                                    SparseGPTConfig(sparsity=0.5)], ids=["magnitude", "wanda", "sparsegpt"])
def test_unstructured_methods_reach_their_sparsity(arch, config, corpus):
    m = _tiny(arch)
    report = prune_(m, config, _calib(m, corpus))
    assert report["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert torch.isfinite(_logits(m.hf, IDS)).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_smoothquant_scaling_leaves_the_function_unchanged(arch):
    """Gemma's norms scale by (1 + weight): smoothing must respect the offset."""
    m = _tiny(arch)
    ref = _logits(m.hf, IDS)
    g = torch.Generator().manual_seed(3)
    stats = {}
    for layer in m.adapter.layers():
        for _, consumers in m.adapter.smoothing_pairs(layer):
            stats[id(consumers[0])] = torch.rand(consumers[0].in_features, generator=g) * 4 + 0.1
    assert smooth_(m.adapter, stats, alpha=0.5) >= 3 * 3
    torch.testing.assert_close(_logits(m.hf, IDS), ref, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("config, floor", [(Int8DynamicConfig(smoothquant=0.5), 25.0),
                                           (Int4WeightConfig(method="gptq", group_size=16), 15.0),
                                           # embeddings and lm_head too: Gemma's table keeps its sqrt(hidden)
                                           # scale, a tied pair stays one matrix (an int4 head serves the
                                           # table through int4 lookups: the table's rows are on the 4-bit
                                           # grid too, tiny Gemma 3 falls to ~8 dB)
                                           (Int8WeightConfig(skip=()), 25.0),
                                           (Int4WeightConfig(method="gptq", group_size=16, skip=()), 13.0)],
                         ids=["int8-dynamic-sq", "int4-gptq", "int8-weight-all", "int4-gptq-all"])
def test_quantize_keeps_quality_and_reloads(arch, config, floor, corpus, tmp_path):
    m = _tiny(arch)
    ref = _logits(m.hf, IDS)
    quantize_(m, config, _calib(m, corpus).tokens)
    out = _logits(m.hf, IDS)
    # the tiny Gemmas (embeddings x sqrt(64), soft-capping) are more sensitive: int4 RTN gives ~12 dB there
    assert sqnr(ref, out) > (floor - 6 if arch.startswith("gemma") and "int4" in config.scheme else floor)
    from slimlm.quantize import save as qsave

    qsave(m, tmp_path / "q")
    assert torch.equal(_logits(load(tmp_path / "q").hf, IDS), out)


@pytest.mark.parametrize("arch", ARCHS)
def test_distillation_lowers_kl_to_the_teacher(arch, corpus):
    teacher = _tiny(arch, tied=0)
    with torch.no_grad():  # a peaked teacher, so there is something to learn
        teacher.adapter.lm_head().weight.mul_(8.0)
    teacher.rehash()
    student = _tiny(arch, tied=0, layers=2, seed=1)  # shallower, other weights

    def kl():
        return evaluate(student, corpus, seq_len=64, max_tokens=512, teacher=teacher)["teacher_agreement"]["kl"]

    before = kl()
    distill_run(student, teacher, corpus, DistillConfig(steps=12, lr=3e-3, seq_len=64, batch_size=4))
    assert kl() < 0.8 * before


def test_tiny_tokenizer_is_shared_by_every_decoder():
    assert len(byte_tokenizer("qwen2")) == len(byte_tokenizer("llama"))


def test_gguf_of_an_unsupported_architecture_is_refused_from_its_header(tmp_path, monkeypatch):
    import gguf
    import transformers

    from slimlm.errors import UnsupportedModelError

    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), "bloom")
    w.add_tensor("token_embd.weight", torch.zeros(8, 4).numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    def never(*a, **k):
        raise AssertionError("weights were read before the architecture was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    with pytest.raises(UnsupportedModelError, match="'bloom'.*llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3"):
        load(path)


@pytest.mark.parametrize("arch", ARCHS)
def test_profile_runs_prefill_and_decode(arch):
    from slimlm.profile import compare

    r = compare([_tiny(arch)], shapes=((1, 16),), decode_tokens=4, repeats=1, warmup=0, decode_repeats=1,
                memory=False)[0]
    assert r["latency_ms"]["1x16"]["p50"] > 0 and r["decode_tokens_per_s"] > 0 and r["flops"]["1x16"] > 0
