"""Deterministic training batches: the data position alone says which rows a step reads.

Language modelling: the train split is packed once into (N, seq_len) rows; epoch e visits them in a
permutation seeded by (seed, e). Sample position p is row ``perm_{p // N}[p % N]``. A step of a run with
world size W, grad_accum A and micro-batch B reads positions ``[s*B*A*W, (s+1)*B*A*W)``; micro-batch a of
rank r reads ``B`` of them starting at ``s*B*A*W + (a*W + r)*B``. So a resumed run needs only the step
number, and 2 processes with A=1 read exactly what 1 process with A=2 reads (the 2-process test relies on
this). Classification uses the same scheme over labelled documents.
"""

from __future__ import annotations

import torch

from slimlm.data import Corpus, pack
from slimlm.errors import DataError


class Positions:
    """Maps sample positions to item indices through per-epoch seeded permutations."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g)}  # keep one epoch in memory
        return self._perms[epoch]

    def indices(self, start: int, count: int) -> list[int]:
        return [int(self._perm(p // self.n)[p % self.n]) for p in range(start, start + count)]


class LMBatches:
    """Packed rows of the train split: ``batch(start, B)`` -> (row ids (B,), input_ids (B, T))."""

    def __init__(self, tokenizer, corpus: Corpus, seq_len: int, seed: int, split: str = "train"):
        self.rows = pack(tokenizer, corpus.texts(split), seq_len)  # (N, T)
        self.pos = Positions(self.rows.shape[0], seed)

    def __len__(self) -> int:
        return self.rows.shape[0]

    def batch(self, start: int, count: int) -> tuple[torch.Tensor, dict]:
        ids = torch.tensor(self.pos.indices(start, count))
        return ids, {"input_ids": self.rows[ids]}


class ClassBatches:
    """Labelled documents: ``batch(start, B)`` -> (doc ids, tokenised inputs with ``labels``)."""

    def __init__(self, tokenizer, corpus: Corpus, seq_len: int, seed: int, split: str = "train"):
        self.docs = corpus.split(split)
        if any(d.label is None for d in self.docs):
            raise DataError(f"data {corpus.name!r} has unlabelled {split} documents; a classifier needs labels.")
        self.tok, self.seq_len = tokenizer, seq_len
        self.pos = Positions(len(self.docs), seed)

    def __len__(self) -> int:
        return len(self.docs)

    def batch(self, start: int, count: int) -> tuple[torch.Tensor, dict]:
        idx = self.pos.indices(start, count)
        docs = [self.docs[i] for i in idx]
        enc = self.tok([d.text for d in docs], truncation=True, max_length=self.seq_len, padding=True,
                       return_tensors="pt")
        enc = dict(enc)
        enc.pop("token_type_ids", None)
        enc["labels"] = torch.tensor([d.label for d in docs])
        return torch.tensor(idx), enc
