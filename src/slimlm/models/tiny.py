"""Tiny, seeded, randomly initialised models for tests and dry runs (`tiny:llama`, `tiny:bert`).

They are built in-process (nothing to download) with a byte-level tokenizer that covers any UTF-8 text.
Options go in a query string: ``tiny:llama?layers=4&hidden=64&heads=4&kv_heads=2&ffn=128&seed=0`` and
``tiny:bert?labels=6`` (a sequence-classification head; without ``labels`` the encoder has no head).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import torch

from slimlm.errors import SpecError

_DEFAULTS = {
    "llama": dict(layers=4, hidden=64, heads=4, kv_heads=2, ffn=128, seed=0, max_pos=1024),
    "bert": dict(layers=4, hidden=64, heads=4, ffn=128, seed=0, max_pos=512, labels=0),
}


def byte_tokenizer(kind: str):
    """A byte-level BPE tokenizer with no merges: 256 byte tokens plus the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if kind == "llama":
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    else:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    if kind == "llama":
        tok.add_special_tokens(specials)
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<pad>"
        )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )


def parse_tiny(spec: str) -> tuple[str, dict[str, int]]:
    body = spec.split(":", 1)[1]
    kind, _, query = body.partition("?")
    if kind not in _DEFAULTS:
        raise SpecError(f"unknown tiny model {kind!r}; use tiny:llama or tiny:bert.")
    opts = dict(_DEFAULTS[kind])
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in opts:
            raise SpecError(f"unknown option {key!r} in {spec!r}; valid options: {', '.join(opts)}.")
        try:
            opts[key] = int(value)
        except ValueError:
            raise SpecError(f"option {key}={value!r} in {spec!r} must be an integer.") from None
    return kind, opts


def build_tiny(spec: str):
    """Return ``(hf_model, tokenizer)`` for a ``tiny:`` spec, deterministically from its seed."""
    kind, o = parse_tiny(spec)
    tokenizer = byte_tokenizer(kind)
    torch.manual_seed(o["seed"])
    if kind == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=o["hidden"], intermediate_size=o["ffn"],
            num_hidden_layers=o["layers"], num_attention_heads=o["heads"], num_key_value_heads=o["kv_heads"],
            head_dim=o["hidden"] // o["heads"], max_position_embeddings=o["max_pos"], tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = LlamaForCausalLM(cfg)
    else:
        from transformers import BertConfig, BertForSequenceClassification, BertModel

        cfg = BertConfig(
            vocab_size=len(tokenizer), hidden_size=o["hidden"], intermediate_size=o["ffn"],
            num_hidden_layers=o["layers"], num_attention_heads=o["heads"], max_position_embeddings=o["max_pos"],
            pad_token_id=tokenizer.pad_token_id,
        )
        if o["labels"]:
            cfg.num_labels = o["labels"]
            model = BertForSequenceClassification(cfg)
        else:
            model = BertModel(cfg, add_pooling_layer=False)
    model.eval()
    return model, tokenizer
