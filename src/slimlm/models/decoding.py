"""Decoding pieces shared by the server, the ONNX export and the text sampler.

- The KV cache's keyword: transformers 5 renamed ``past_key_values`` to ``cache`` in the models' ``forward``
  (and in their outputs); `cache_arg` and `cache_of` read whichever the installed version has.
- `nucleus`: the distribution a sampler draws from, ``softmax(logits / temperature)`` cut to the smallest set
  of likeliest tokens whose mass reaches ``top_p`` (the likeliest token always stays), renormalised.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn


def cache_arg(hf: nn.Module) -> str:
    """The keyword ``hf.forward`` takes its KV cache by: ``cache`` (transformers 5) or ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"


def cache_of(out):
    """The KV cache in a model's output, under either name."""
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


def nucleus(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Probabilities over the last dimension of ``logits`` (..., V): ``softmax(logits / temperature)`` kept to
    the smallest set of likeliest tokens whose mass reaches ``top_p`` (ties broken by token id), renormalised."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    p_sorted, idx = torch.sort(probs, dim=-1, descending=True, stable=True)
    before = torch.cumsum(p_sorted, dim=-1) - p_sorted  # mass of the likelier tokens
    p_sorted = p_sorted.masked_fill(before >= top_p, 0.0)  # the likeliest token has 0 before it: always kept
    kept = torch.zeros_like(probs).scatter_(-1, idx, p_sorted)
    return kept / kept.sum(-1, keepdim=True)
