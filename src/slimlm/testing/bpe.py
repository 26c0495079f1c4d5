"""A tiny Llama with a real byte-level BPE tokenizer trained in-process (for tests that need merges, e.g.
vocabulary trimming and GGUF export), so no test downloads a tokenizer."""

from __future__ import annotations

import torch

from slimlm.models import Model


def bpe_llama(texts: list[str], vocab_size: int = 600, spec: str = "tiny-bpe") -> Model:
    """A seeded 2-layer Llama (hidden 32, GQA 4/2, tied embeddings) with a BPE of ``vocab_size`` trained on
    ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<pad>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    return Model(hf=LlamaForCausalLM(cfg).eval(), tokenizer=fast, spec=spec, provenance={"spec": spec, "stages": []})
