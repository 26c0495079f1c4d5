"""Tiny, seeded, randomly initialised models for tests and dry runs (`tiny:llama`, `tiny:bert`, ...).

They are built in-process (nothing to download) with a byte-level tokenizer that covers any UTF-8 text.
Options go in a query string: ``tiny:llama?layers=4&hidden=64&heads=4&kv_heads=2&ffn=128&seed=0`` and
``tiny:bert?labels=6`` (a sequence-classification head; without ``labels`` the encoder has no head).
Every supported decoder architecture has one, with its family's quirks switched on: ``tiny:qwen2``
(attention biases), ``tiny:qwen3`` (q/k norms, untied head), ``tiny:gemma2`` / ``tiny:gemma3``
(scaled embeddings, four norms per block, soft-capping, sliding-window layers), ``tiny:mistral`` (untied)
and ``tiny:phi3`` (fused qkv / gate_up, converted on load to the equivalent Mistral layout, as any Phi-3
is). ``tied=0|1`` overrides whether lm_head shares the embedding matrix. ``merges=1`` gives the byte-level
tokenizer one BPE merge (two spaces -> one token): llama.cpp refuses a BPE vocabulary without merges.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import torch

from slimlm.errors import SpecError

_DECODER = dict(layers=4, hidden=64, heads=4, kv_heads=2, ffn=128, seed=0, max_pos=1024, merges=0, spm=0)
_DEFAULTS = {
    "llama": dict(_DECODER, tied=1),
    "qwen2": dict(_DECODER, tied=1),
    "qwen3": dict(_DECODER, tied=0),
    "gemma2": dict(_DECODER, tied=1),
    "gemma3": dict(_DECODER, tied=1),
    "mistral": dict(_DECODER, tied=0),
    "phi3": dict(_DECODER, tied=0),
    "bert": dict(layers=4, hidden=64, heads=4, ffn=128, seed=0, max_pos=512, labels=0),
}
KINDS = tuple(_DEFAULTS)  # the tiny:KIND specs `build_tiny` takes


def byte_tokenizer(kind: str, merges: int = 0):
    """A byte-level BPE tokenizer: 256 byte tokens plus the family's special tokens; no merges, or with
    ``merges`` one merge (two spaces, ``"\u0120\u0120"``, the last token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if kind != "bert":
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    else:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet) + ["\u0120\u0120"] * bool(merges))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("\u0120", "\u0120")] if merges else []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    if kind != "bert":
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


#: the SentencePiece-style tokenizer's merges (in rank order) over its character alphabet
_SPM_MERGES = [("\u2581", "t"), ("h", "e"), ("\u2581t", "he"), ("\u2581", "a"), ("i", "n"), ("\u2581", "s"),
               ("e", "r"), ("o", "u"), ("\u2581a", "n"), ("\u2581an", "d"), ("\u2581", "o"), ("\u2581o", "f"),
               ("\u2581", "\u2581"), ("t", "h"), ("\u2581", "I")]


def spm_tokenizer(prefix: bool = True, extra: tuple[str, ...] = ()):
    """A SentencePiece-style BPE as Llama 2, Mistral, Phi-3 (``prefix``: a space prepended to the text) and
    Gemma (no prefix) ship it in ``tokenizer.json``: spaces as ``\u2581``, 256 ``<0xNN>`` byte-fallback tokens,
    ``<unk>``/``<s>``/``</s>`` (and ``extra`` special tokens), printable ASCII plus a few merges, BOS added."""
    import string

    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    chars = sorted(set(string.ascii_letters + string.digits + string.punctuation) | {"\u2581"})
    vocab = specials + [f"<0x{b:02X}>" for b in range(256)] + chars + ["".join(m) for m in _SPM_MERGES]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(vocab)}, merges=_SPM_MERGES, unk_token="<unk>",
                               fuse_unk=True, byte_fallback=True))
    replace = normalizers.Replace(" ", "\u2581")
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), replace]) if prefix else replace
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
                                    + [decoders.Strip(" ", 1, 0)] * prefix)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B:1",
                                                       special_tokens=[("<s>", 1)])
    tok.add_special_tokens(specials + list(extra))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<unk>")


def parse_tiny(spec: str) -> tuple[str, dict[str, int]]:
    body = spec.split(":", 1)[1]
    kind, _, query = body.partition("?")
    if kind not in _DEFAULTS:
        raise SpecError(f"unknown tiny model {kind!r}; use one of {', '.join('tiny:' + k for k in _DEFAULTS)}.")
    opts = dict(_DEFAULTS[kind])
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in opts:
            raise SpecError(f"unknown option {key!r} in {spec!r}; valid options: {', '.join(opts)}.")
        try:
            opts[key] = int(value)
        except ValueError:
            raise SpecError(f"option {key}={value!r} in {spec!r} must be an integer.") from None
    for key in ("hidden", "ffn", "layers", "heads", "kv_heads", "max_pos"):
        if key in opts and opts[key] < 1:
            raise SpecError(f"option {key}={opts[key]} in {spec!r} must be at least 1.")
    if opts["hidden"] % opts["heads"]:
        raise SpecError(f"{spec!r}: hidden={opts['hidden']} is not a multiple of heads={opts['heads']}.")
    if "kv_heads" in opts and opts["heads"] % opts["kv_heads"]:
        raise SpecError(f"{spec!r}: heads={opts['heads']} is not a multiple of kv_heads={opts['kv_heads']}.")
    return kind, opts


def build_tiny(spec: str):
    """Return ``(hf_model, tokenizer)`` for a ``tiny:`` spec, deterministically from its seed."""
    kind, o = parse_tiny(spec)
    if o.get("spm"):  # Gemma's SentencePiece prepends no space; llama.cpp reads Phi-3's <|endoftext|> by name
        tokenizer = spm_tokenizer(prefix=not kind.startswith("gemma"), extra=("<|endoftext|>",) * (kind == "phi3"))
    else:
        tokenizer = byte_tokenizer(kind, o.get("merges", 0))
    torch.manual_seed(o["seed"])
    if kind != "bert":
        model = _decoder(kind, o, tokenizer)
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


# per architecture: (config class, model class, extra config keys that switch the family's quirks on)
_DECODERS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 512}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),  # q/k/v carry biases in Qwen2 itself
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"sliding_window": 16, "query_pre_attn_scalar": 16,
                                                     "hidden_activation": "gelu_pytorch_tanh"}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"sliding_window": 16, "query_pre_attn_scalar": 16}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"sliding_window": 512}),
}


def _decoder(kind: str, o: dict, tokenizer):
    import transformers

    cfg_name, model_name, extra = _DECODERS[kind]
    cfg = getattr(transformers, cfg_name)(
        vocab_size=len(tokenizer), hidden_size=o["hidden"], intermediate_size=o["ffn"],
        num_hidden_layers=o["layers"], num_attention_heads=o["heads"], num_key_value_heads=o["kv_heads"],
        head_dim=o["hidden"] // o["heads"], max_position_embeddings=o["max_pos"],
        tie_word_embeddings=bool(o["tied"]), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **extra,
    )
    model = getattr(transformers, model_name)(cfg)
    if kind.startswith("gemma"):  # Gemma norms scale by (1 + weight), initialised at 0: make them non-trivial
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.normal_(0.0, 0.1)
    if kind == "phi3":
        from slimlm.models.convert import phi3_to_mistral

        model = phi3_to_mistral(model)
    return model
