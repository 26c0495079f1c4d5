"""Tokenise and pack text into fixed windows; the seeded calibration sampler.

BOS policy: no BOS token is added (SmolLM2's tokenizer adds none either). Windows are non-overlapping
slices of each document's token stream; evaluation takes an equal share of the token budget from the start
of every eval document (so a 6-play eval split is scored on all six plays, not the first one only).
"""

from __future__ import annotations

import torch

from slimlm.data.corpus import Corpus
from slimlm.errors import DataError


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


def eval_windows(tokenizer, texts: list[str], seq_len: int, max_tokens: int | None = None) -> list[torch.Tensor]:
    """Non-overlapping windows (1-D LongTensors, the last of a document may be shorter) within the budget."""
    if seq_len < 2:
        raise DataError("--seq-len must be at least 2.")
    share = None if max_tokens is None else max(seq_len, max_tokens // max(1, len(texts)))
    windows: list[torch.Tensor] = []
    for text in texts:
        ids = encode(tokenizer, text)[: share] if share else encode(tokenizer, text)
        for i in range(0, len(ids), seq_len):
            chunk = ids[i : i + seq_len]
            if len(chunk) >= 2:
                windows.append(torch.tensor(chunk, dtype=torch.long))
    if max_tokens is not None:  # trim the tail so the total is exactly within the budget
        out, total = [], 0
        for w in windows:
            if total >= max_tokens:
                break
            w = w[: max_tokens - total]
            if len(w) >= 2:
                out.append(w)
            total += len(w)
        windows = out
    if not windows:
        raise DataError("the eval text is shorter than two tokens.")
    return windows


def pack(tokenizer, texts: list[str], seq_len: int, eos: bool = True) -> torch.Tensor:
    """All texts as one token stream (EOS between documents), cut into full ``(N, seq_len)`` rows."""
    stream: list[int] = []
    sep = [tokenizer.eos_token_id] if eos and tokenizer.eos_token_id is not None else []
    for text in texts:
        stream += encode(tokenizer, text) + sep
    n = len(stream) // seq_len
    if n == 0:
        raise DataError(f"the text has {len(stream)} tokens, fewer than one window of {seq_len}; give more text "
                        "or a shorter window.")
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


def calibration_batch(tokenizer, corpus: Corpus, n: int, seq_len: int, seed: int = 0,
                      split: str = "calibration") -> torch.Tensor:
    """``n`` random windows of ``seq_len`` tokens from ``split``, reproducible from ``seed``: (n, seq_len)."""
    rows = pack(tokenizer, corpus.texts(split), seq_len)
    g = torch.Generator().manual_seed(seed)
    if rows.shape[0] >= n:
        return rows[torch.randperm(rows.shape[0], generator=g)[:n]]
    # fewer full windows than asked: sample random offsets in the stream instead (windows may overlap)
    stream = rows.reshape(-1)
    if stream.numel() <= seq_len:
        return rows
    starts = torch.randint(0, stream.numel() - seq_len, (n,), generator=g)
    return torch.stack([stream[s : s + seq_len] for s in starts.tolist()])
