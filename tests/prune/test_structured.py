import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from slimlm.errors import ConfigError
from slimlm.models import load, save
from slimlm.prune import Calibration, parse_structured, prune_, save_kwargs


def _logits(hf, ids):
    with torch.inference_mode():
        return hf(input_ids=ids).logits


@pytest.mark.parametrize("spec, expect", [
    ("layers=1", {"layers": 2}),
    ("heads=0.5", {"heads": 2, "kv_heads": 1}),  # one whole KV group of two query heads
    ("ffn=0.25", {"intermediate_size": 96}),
    ("hidden=0.25", {"hidden_size": 48}),
    ("hidden=0.1", {"hidden_size": 56}),  # 57.6 rounded to a multiple of the 4 heads
    ("layers=1,heads=0.5,ffn=0.5,hidden=0.25", {"layers": 2, "heads": 2, "intermediate_size": 64, "hidden_size": 48}),
])
def test_each_kind_shrinks_the_right_shapes_and_reloads_in_plain_transformers(spec, expect, trained, calib,
                                                                             eval_windows, tmp_path):
    before = trained.num_params()
    report = prune_(trained, parse_structured(spec), calib)
    shape = trained.adapter.describe()
    for k, v in expect.items():
        assert shape[k] == v, (k, shape)
    assert report["params_after"] < before
    p = trained.adapter.attention(trained.adapter.layers()[0])
    assert p.q.weight.shape == (shape["heads"] * shape["head_dim"], shape["hidden_size"])
    assert p.k.weight.shape == (shape["kv_heads"] * shape["head_dim"], shape["hidden_size"])
    m = trained.adapter.mlp(trained.adapter.layers()[0])
    assert m.down.weight.shape == (shape["hidden_size"], shape["intermediate_size"])
    save(trained, tmp_path / "v", **save_kwargs(parse_structured(spec), report, trained))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "v").eval()  # no slimlm involved
    assert plain.num_parameters() == trained.num_params()
    ids = eval_windows[:2]
    torch.testing.assert_close(_logits(plain, ids), _logits(trained.hf, ids), rtol=1e-4, atol=1e-4)


def test_query_head_mode_keeps_kv_heads(trained, calib, eval_windows):
    prune_(trained, parse_structured("heads=0.5", head_mode="query"), calib)
    shape = trained.adapter.describe()
    assert (shape["heads"], shape["kv_heads"]) == (2, 2)
    assert torch.isfinite(_logits(trained.hf, eval_windows[:1])).all()


def test_block_influence_drops_a_block_that_does_nothing(trained, calib):
    a = trained.adapter
    layer = a.layers()[1]
    with torch.no_grad():  # block 1 now adds nothing to the residual stream: influence 0
        a.attention(layer).o.weight.zero_()
        a.mlp(layer).down.weight.zero_()
    marker = a.layers()[2].mlp.down_proj.weight.clone()
    report = prune_(trained, parse_structured("layers=1"), calib)
    assert report["layers"]["removed"] == [1]
    torch.testing.assert_close(trained.adapter.layers()[1].mlp.down_proj.weight, marker)


def test_perplexity_layer_importance_and_taylor_ffn_run(trained, calib):
    report = prune_(trained, parse_structured("layers=1,ffn=0.25", layer_importance="perplexity",
                                              ffn_importance="taylor"), calib)
    assert len(report["layers"]["scores"]) == 3
    assert trained.adapter.intermediate_size == 96


def test_ffn_by_activation_beats_random_channels(_trained, calib, eval_windows, lm_loss):
    import copy

    from slimlm.models import Model
    from slimlm.prune.surgery import slice_ffn

    smart = Model(hf=copy.deepcopy(_trained.hf), tokenizer=_trained.tokenizer, spec="t")
    prune_(smart, parse_structured("ffn=0.5"), calib)
    rand = Model(hf=copy.deepcopy(_trained.hf), tokenizer=_trained.tokenizer, spec="t")
    g = torch.Generator().manual_seed(0)
    slice_ffn(rand, [torch.randperm(128, generator=g)[:64].sort().values for _ in range(3)])
    assert lm_loss(smart, eval_windows) < lm_loss(rand, eval_windows)


def test_bert_layers_and_ffn(tmp_path):
    model = load("tiny:bert?labels=3")
    calib = Calibration(torch.randint(5, 200, (4, 32)))
    prune_(model, parse_structured("layers=1,ffn=0.5"), calib)
    assert model.adapter.num_layers == 3 and model.adapter.intermediate_size == 64
    save(model, tmp_path / "b")
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "b").eval()
    ids = calib.tokens[:2]
    torch.testing.assert_close(_logits(plain, ids), _logits(model.hf, ids), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spec, model_spec, match", [
    ("heads=0.25", "tiny:llama", r"valid ratios: whole KV groups \(head_mode=groups\): 0.5"),
    ("heads=0.25", "tiny:llama?hidden=48&heads=6&kv_heads=3", r"6 query heads in 3 KV groups .*head_mode=query\): 0.5"),
    ("hidden=0.99", "tiny:llama", "rounds to 0"),
    ("layers=4", "tiny:llama", "would remove all 4 layers"),
    ("layers=2.5", "tiny:llama", "whole count"),
    ("heads=0.5", "tiny:bert", "BERT"),
    ("hidden=0.1", "tiny:bert", "together with whole heads"),
    ("vocab=domain", "tiny:bert", "causal LMs"),
])
def test_invalid_ratios_fail_before_any_work(spec, model_spec, match):
    model = load(model_spec)
    h = model.hash
    with pytest.raises(ConfigError, match=match):
        prune_(model, parse_structured(spec), Calibration(torch.randint(5, 200, (2, 16))))
    assert model.rehash() == h


def test_unknown_structured_key_names_the_valid_ones():
    with pytest.raises(ConfigError, match="use layers, heads, ffn, hidden or vocab"):
        parse_structured("head=0.5")


def test_vocab_domain_trims_rows_and_tokenizer_round_trips(bpe_llama, data, tmp_path):
    model = bpe_llama
    domain = data[1][:3]  # a few docstrings define the "domain"
    old_tok, old_hf = model.tokenizer, model.hf
    text = domain[0][:2000]
    old_ids = old_tok(text, add_special_tokens=False)["input_ids"]
    report = prune_(model, parse_structured("vocab=domain"), Calibration(torch.zeros(1, 2, dtype=torch.long), texts=domain))
    vmap = model.provenance["vocab_map"]
    assert report["vocab"]["vocab_after"] == len(vmap) < report["vocab"]["vocab_before"] == 600
    assert model.hf.config.vocab_size == len(vmap) == model.adapter.embeddings().weight.shape[0]
    assert model.hf.lm_head.weight is model.adapter.embeddings().weight  # tie kept
    new_ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert [vmap[i] for i in new_ids] == old_ids  # same tokens, renumbered
    assert model.tokenizer.decode(new_ids) == text
    # logits over the kept vocabulary equal the original model's columns for those tokens
    x_old, x_new = torch.tensor([old_ids[:64]]), torch.tensor([new_ids[:64]])
    torch.testing.assert_close(_logits(model.hf, x_new), _logits(old_hf, x_old)[..., vmap], rtol=1e-5, atol=1e-5)
    # text with tokens the domain never used falls back to smaller kept pieces and still round-trips
    other = "Zyxwvut ☃ qqq 12345 ünïcödé"
    ids = model.tokenizer(other, add_special_tokens=False)["input_ids"]
    assert model.tokenizer.decode(ids) == other
    # saved dir: plain transformers tokenizer and model, slimlm load restores vocab_map
    save(model, tmp_path / "v", **save_kwargs(parse_structured("vocab=domain"), report, model))
    tok = AutoTokenizer.from_pretrained(tmp_path / "v")
    assert tok(text, add_special_tokens=False)["input_ids"] == new_ids
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "v").eval()
    torch.testing.assert_close(_logits(plain, x_new), _logits(model.hf, x_new))
    assert load(tmp_path / "v").provenance["vocab_map"] == vmap


def test_vocab_keep_also_keeps_the_tokens_of_a_general_corpus(data, tmp_path):
    """vocab=domain,vocab_keep=DATA: general text the model must still read keeps its own tokens (renumbered),
    instead of falling back to smaller pieces."""
    import copy

    from slimlm.testing.bpe import bpe_llama as build

    bpe_llama = build(data[0] + data[1], 600)  # a fresh one: the session fixture is trimmed by another test

    general = data[0][5][:3000]
    (tmp_path / "general.txt").write_text(general)
    domain = data[1][:3]
    calib = Calibration(torch.zeros(1, 2, dtype=torch.long), texts=domain)
    old_ids = bpe_llama.tokenizer(general, add_special_tokens=False)["input_ids"]
    only = copy.deepcopy(bpe_llama)
    r1 = prune_(only, parse_structured("vocab=domain"), calib)
    both = copy.deepcopy(bpe_llama)
    cfg = parse_structured(f"vocab=domain,vocab_keep={tmp_path / 'general.txt'}")
    r2 = prune_(both, cfg, calib)
    assert r1["vocab"]["vocab_after"] < r2["vocab"]["vocab_after"] < 600
    assert r2["vocab"]["kept_from"] == str(tmp_path / "general.txt") and "vocab_keep" in cfg.label()
    vmap = both.provenance["vocab_map"]
    assert [vmap[i] for i in both.tokenizer(general, add_special_tokens=False)["input_ids"]] == old_ids
    assert len(only.tokenizer(general, add_special_tokens=False)["input_ids"]) > len(old_ids)  # split finer
    with pytest.raises(ConfigError, match="needs vocab=domain"):
        parse_structured("layers=1,vocab_keep=pydoc")


@pytest.mark.parametrize("spec, version, kept", [
    ("ffn=0.25", 2, 256),  # 240 is not a multiple of 32: the nearest that is
    ("ffn=0.25", 1, 240),  # configs written before the rounding keep the exact ratio
    ("ffn=0.3", 2, 224),   # already a multiple: unchanged
    ("ffn=0.97", 2, 32),   # at least one block is kept
])
def test_ffn_width_is_rounded_to_the_quantized_block_on_real_widths(spec, version, kept, tmp_path):
    model = load("tiny:llama?layers=2&hidden=64&heads=4&kv_heads=2&ffn=320&seed=0")
    cfg = parse_structured(spec).model_copy(update={"version": version})
    rows = torch.randint(0, model.hf.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(0))
    report = prune_(model, cfg, Calibration(rows, texts=["x"], batch_size=4))
    assert report["ffn"]["kept"] == kept
    assert model.adapter.describe()["intermediate_size"] == kept
    assert model.adapter.mlp(model.adapter.layers()[1]).gate.weight.shape[0] == kept


def test_ffn_ratio_that_keeps_nothing_is_refused_before_any_work(trained):
    with pytest.raises(ConfigError, match="keeps 0"):
        prune_(trained, parse_structured("ffn=0.999"), None)
