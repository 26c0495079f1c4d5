import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from slimlm.errors import ModelFileError, SpecError, UnsupportedModelError
from slimlm.models import load, save


def test_tiny_llama_shapes_and_gqa():
    m = load("tiny:llama?layers=3&hidden=64&heads=4&kv_heads=2")
    a = m.adapter
    assert (a.num_layers, a.hidden_size, a.num_heads, a.num_kv_heads, a.head_dim) == (3, 64, 4, 2, 16)
    att = a.attention(a.layers()[0])
    assert att.k.out_features == a.num_kv_heads * a.head_dim
    assert att.q.out_features == a.num_heads * a.head_dim
    mlp = a.mlp(a.layers()[0])
    assert mlp.gate is not None and mlp.down.in_features == a.intermediate_size
    assert m.task == "causal-lm"
    assert len(a.block_linears()) == 3 * 7


def test_tiny_bert_with_and_without_head():
    enc = load("tiny:bert")
    cls = load("tiny:bert?labels=6")
    assert enc.task == "encoder" and cls.task == "classification"
    assert cls.hf.config.num_labels == 6
    assert cls.adapter.mlp(cls.adapter.layers()[0]).gate is None


def test_tiny_is_deterministic_by_seed():
    a, b, c = load("tiny:llama"), load("tiny:llama"), load("tiny:llama?seed=1")
    assert a.hash == b.hash != c.hash


def test_save_reload_with_plain_transformers_identical_logits(tmp_path):
    m = load("tiny:llama")
    save(m, tmp_path / "v")
    meta = json.loads((tmp_path / "v" / "slimlm.json").read_text())
    assert meta["hash"] == m.hash and "versions" in meta
    x = torch.randint(0, 200, (2, 17))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "v").eval()
    ours = load(tmp_path / "v")
    with torch.no_grad():
        ref = m.hf(x).logits
        assert torch.equal(plain(x).logits, ref)
        assert torch.equal(ours.hf(x).logits, ref)
    assert ours.hash == m.hash


def test_hash_changes_after_in_place_edit():
    m = load("tiny:llama")
    h = m.hash
    with torch.no_grad():
        m.adapter.mlp(m.adapter.layers()[0]).down.weight.mul_(0.5)
    assert m.rehash() != h


def test_missing_path_fails_clearly():
    with pytest.raises(SpecError, match="does not exist") as e:
        load("./no/such/model")
    # the message lists every spec load takes without a path: each tiny architecture, not only llama and bert
    for spec in ("builtin:smollm2-135m", "builtin:minilm-l6", "tiny:llama", "tiny:gemma3", "tiny:phi3", "tiny:bert"):
        assert spec in str(e.value)


def test_unknown_builtin_and_tiny_option():
    with pytest.raises(SpecError, match="builtin:smollm2-135m"):
        load("builtin:gpt5")
    with pytest.raises(SpecError, match="valid options"):
        load("tiny:llama?depth=3")
    for spec, said in (("tiny:llama?heads=3", "hidden=64 is not a multiple of heads=3"),
                       ("tiny:qwen2?kv_heads=3", "not a multiple of kv_heads=3"),
                       ("tiny:bert?layers=0", "layers=0 .* must be at least 1")):
        with pytest.raises(SpecError, match=said):  # before transformers builds anything
            load(spec)


def test_unsupported_architecture_fails_before_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(UnsupportedModelError, match="'gpt2' is not supported.*llama"):
        load(tmp_path)


def test_truncated_safetensors_fails_clearly(tmp_path):
    save(load("tiny:llama"), tmp_path / "v")
    f = tmp_path / "v" / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load(tmp_path / "v")


def test_corrupt_safetensors_fails_clearly(tmp_path):
    save(load("tiny:llama"), tmp_path / "v")
    (tmp_path / "v" / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelFileError, match="not a valid safetensors"):
        load(tmp_path / "v")


def test_a_config_that_does_not_fit_the_weights_fails_before_the_model_is_built(tmp_path, monkeypatch):
    """A config.json left at the architecture's defaults describes a 7B Llama: slimlm used to build all of it
    (24 GB, minutes) before transformers found the shapes wrong."""
    import transformers

    save(load("tiny:llama"), tmp_path / "v")
    (tmp_path / "v" / "config.json").write_text(json.dumps({"model_type": "llama"}))

    def built(*args, **kwargs):
        raise AssertionError("the model was built before its shapes were checked")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(built))
    with pytest.raises(ModelFileError, match=r"embed_tokens.weight with shape \[\d+, \d+\] but config.json "
                                             r"describes \[32000, 4096\]"):
        load(tmp_path / "v")


def test_a_safetensors_header_with_a_malformed_entry_fails_clearly(tmp_path):
    save(load("tiny:llama"), tmp_path / "v")
    header = json.dumps({"x": 5}).encode()
    (tmp_path / "v" / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(ModelFileError, match="not a valid safetensors"):
        load(tmp_path / "v")


def test_pickle_only_directory_is_refused(tmp_path):
    save(load("tiny:llama"), tmp_path / "v")
    (tmp_path / "v" / "model.safetensors").unlink()
    (tmp_path / "v" / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(ModelFileError, match="safetensors only"):
        load(tmp_path / "v")


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    m = load("tiny:llama")
    save(m, tmp_path / "v")
    before = sorted(p.name for p in (tmp_path / "v").iterdir())

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(m.tokenizer, "save_pretrained", boom)
    with pytest.raises(RuntimeError):
        save(m, tmp_path / "v")
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_save_and_load_of_a_directory_print_nothing(tmp_path, capfd):
    # library calls report through their callers; transformers' per-shard / per-tensor bars stay off
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as a fresh process has it (another test may have turned it off)
    m = load("tiny:llama")
    capfd.readouterr()
    save(m, tmp_path / "v")
    load(tmp_path / "v")
    out, err = capfd.readouterr()
    assert out == "" and "Writing" not in err and "Loading weights" not in err and "%|" not in err, err
    assert hf_logging.is_progress_bar_enabled()  # restored for the caller's own use


def test_a_model_path_with_a_literal_tilde_is_read_from_the_home_folder(tmp_path, monkeypatch):
    save(load("tiny:llama?layers=1"), tmp_path / "v")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load("~/v").num_params() == load(tmp_path / "v").num_params()
    with pytest.raises(SpecError, match="does not exist"):
        load("~/absent.gguf")
