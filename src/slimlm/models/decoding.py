"""Decoding pieces shared by the server, the ONNX export and the text sampler.

- The KV cache's keyword: transformers 5 renamed ``past_key_values`` to ``cache`` in the models' ``forward``
  (and in their outputs); `cache_arg` and `cache_of` read whichever the installed version has.
- `nucleus`: the distribution a sampler draws from, ``softmax(logits / temperature)`` cut to the smallest set
  of likeliest tokens whose mass reaches ``top_p`` (the likeliest token always stays), renormalised.
  It sorts only the likeliest ``candidates`` tokens of a row, which hold the nucleus of most rows, and the
  whole vocabulary only for the others: on a 2-core CPU, sorting 64 rows of a 49k vocabulary took 154 ms, three
  quarters of the model's decode step.
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


def nucleus(logits: torch.Tensor, temperature: float, top_p: float, candidates: int = 4096) -> torch.Tensor:
    """Probabilities over the last dimension of ``logits`` (..., V): ``softmax(logits / temperature)`` kept to
    the smallest set of likeliest tokens whose mass reaches ``top_p`` (ties broken by token id), renormalised.

    A row is sorted over its likeliest ``candidates`` tokens only (put in the same order: probability, then
    token id) when its nucleus ends among them at a probability above the last candidate's, so that no token
    left out could tie with it; any other row is sorted over the whole vocabulary. Kept probabilities are the
    softmax's own values either way."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    flat = probs.reshape(-1, probs.shape[-1])
    kept = torch.zeros_like(flat)
    ok = torch.zeros(flat.shape[0], dtype=torch.bool, device=flat.device)
    k = min(candidates, flat.shape[-1])
    if k < flat.shape[-1]:
        vals, cand = torch.topk(flat, k, dim=-1)
        cand, by_id = torch.sort(cand, dim=-1)  # token order, then a stable sort by probability: ties by id
        vals, order = torch.sort(vals.gather(-1, by_id), dim=-1, descending=True, stable=True)
        cand = cand.gather(-1, order)
        before = torch.cumsum(vals, dim=-1) - vals
        inside = (before < top_p).sum(-1)  # the nucleus' size, if it ends among the candidates
        last = vals.gather(-1, (inside - 1).unsqueeze(-1)).squeeze(-1)
        ok = (inside < k) & (last > vals[:, -1])
        if ok.any():
            kept[ok] = kept[ok].scatter(-1, cand[ok], vals[ok].masked_fill(before[ok] >= top_p, 0.0))
    if not ok.all():
        rest = ~ok
        p_sorted, idx = torch.sort(flat[rest], dim=-1, descending=True, stable=True)
        before = torch.cumsum(p_sorted, dim=-1) - p_sorted  # mass of the likelier tokens
        p_sorted = p_sorted.masked_fill(before >= top_p, 0.0)  # the likeliest token has 0 before it: always kept
        kept[rest] = kept[rest].scatter(-1, idx, p_sorted)
    return (kept / kept.sum(-1, keepdim=True)).reshape(probs.shape)

