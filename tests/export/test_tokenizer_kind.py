"""`tokenizer_kind`: how llama.cpp must read a tokenizer.json (model, pre-tokenizer, space prefix)."""

import pytest

from slimlm.errors import ConfigError
from slimlm.export.gguf import tokenizer_kind

QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3 = QWEN2.replace(r"\p{N}|", r"\p{N}{1,3}|")


def bpe(pre=None, norm=None, byte_fallback=False):
    return {"model": {"type": "BPE", "byte_fallback": byte_fallback, "vocab": {}, "merges": []},
            "pre_tokenizer": pre, "normalizer": norm}


def seq(*steps, key="pretokenizers"):
    return {"type": "Sequence", key: list(steps)}


BYTE = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
BYTE_NO_REGEX = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}
META = {"type": "Metaspace", "replacement": "\u2581"}


@pytest.mark.parametrize("j, want", [
    (bpe(BYTE), ("gpt2", "gpt-2", False)),  # GPT-2, SmolLM2 as transformers reads its GGUF
    (bpe(seq({"type": "Digits", "individual_digits": True}, BYTE)), ("gpt2", "smollm", False)),
    (bpe(seq({"type": "Split", "pattern": {"Regex": QWEN2}}, BYTE_NO_REGEX)), ("gpt2", "qwen2", False)),
    (bpe(seq({"type": "Split", "pattern": {"Regex": LLAMA3}}, BYTE_NO_REGEX)), ("gpt2", "llama-bpe", False)),
    (bpe(seq({"type": "Split", "pattern": {"Regex": "x+"}}, BYTE_NO_REGEX)), ("gpt2", "default", False)),
    # SentencePiece-style: Llama 2 / Mistral (prepend a space), Gemma (no prefix), newer Metaspace forms
    (bpe(norm=seq({"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace"}, key="normalizers"),
         byte_fallback=True), ("llama", None, True)),
    (bpe(norm={"type": "Replace"}, byte_fallback=True), ("llama", None, False)),
    (bpe({**META, "prepend_scheme": "first"}, byte_fallback=True), ("llama", None, True)),
    (bpe({**META, "prepend_scheme": "never"}, byte_fallback=True), ("llama", None, False)),
    (bpe({**META, "add_prefix_space": True}, byte_fallback=True), ("llama", None, True)),
])
def test_tokenizer_kind_reads_the_tokenizer_as_llamacpp_must(j, want):
    got = tokenizer_kind(j)
    assert (got["model"], got["pre"], got["add_space_prefix"]) == want


def test_tokenizer_kind_refuses_what_gguf_export_cannot_write():
    with pytest.raises(ConfigError, match="WordPiece"):
        tokenizer_kind({"model": {"type": "WordPiece"}})
