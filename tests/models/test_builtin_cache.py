"""The builtin model's converted copy in the user cache: made once, made again when the conversion changes."""

import json

import pytest

from slimlm.models import loading


@pytest.fixture
def fake_builtin(tmp_path, monkeypatch):
    """`_smollm2_dir` with the GGUF reading replaced by a tiny model (the real conversion takes ~20 s)."""
    from slimlm.models.tiny import build_tiny

    calls = []

    def read(path):
        calls.append(path)
        return build_tiny("tiny:llama?layers=1")

    monkeypatch.setenv("SLIMLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "_package_dir", lambda *a: tmp_path)
    monkeypatch.setattr(loading, "_load_gguf", read)
    return calls


def test_the_builtin_is_converted_once_and_again_when_the_conversion_changes(fake_builtin):
    target = loading._smollm2_dir()
    assert len(fake_builtin) == 1
    meta = json.loads((target / loading.META_FILE).read_text())
    assert meta["conversion"] == loading.CONVERSION_REV
    assert loading._smollm2_dir() == target and len(fake_builtin) == 1  # cached
    del meta["conversion"]  # a copy made before the digit-split fix (its record then: names, no checksums)
    (target / loading.META_FILE).write_text(json.dumps(meta))
    (target / ".slimlm-files").write_text(json.dumps(sorted(json.loads((target / ".slimlm-files").read_text()))))
    notes = []
    assert loading._smollm2_dir(progress=notes.append) == target and len(fake_builtin) == 2
    assert "again" in notes[0]
    assert json.loads((target / loading.META_FILE).read_text())["conversion"] == loading.CONVERSION_REV


@pytest.mark.parametrize("arch, blocks, n_embd, heads, key_length, want", [
    ("gemma2", 46, 4608, 32, 128, {"query_pre_attn_scalar": 144, "head_dim": 128}),  # Gemma 2 27B: hidden / heads
    ("gemma2", 26, 2304, 8, 256, {"query_pre_attn_scalar": 256, "head_dim": 256}),   # Gemma 2 2B: the head size
    ("gemma3", 62, 5376, 32, 128, {"query_pre_attn_scalar": 168, "head_dim": 128}),  # Gemma 3 27B
    ("gemma3", 26, 1152, 4, 256, {"query_pre_attn_scalar": 256, "head_dim": 256}),   # Gemma 3 1B
    ("qwen3", 28, 1024, 16, 128, {"head_dim": 128}),                                   # Qwen3 0.6B
    ("llama", 30, 576, 9, 64, {}),                                                      # SmolLM2: nothing to add
])
def test_gguf_config_overrides_follow_llama_cpp(arch, blocks, n_embd, heads, key_length, want):
    """What llama.cpp makes of a GGUF that transformers' reader leaves at its defaults (the figures are the
    published configs of those models: Gemma 2 27B's query_pre_attn_scalar is 144, Gemma 3 27B's 168)."""
    head = {"general.architecture": arch, f"{arch}.block_count": blocks, f"{arch}.embedding_length": n_embd,
            f"{arch}.attention.head_count": heads, f"{arch}.attention.key_length": key_length}
    assert loading.gguf_config_overrides(head) == want
