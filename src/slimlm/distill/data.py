"""Deterministic training batches: the data position alone says which rows a step reads.

Language modelling: the train split is packed once into (N, seq_len) rows; epoch e visits them in a
permutation seeded by (seed, e). Sample position p is row ``perm_{p // N}[p % N]``. A step of a run with
world size W, grad_accum A and micro-batch B reads positions ``[s*B*A*W, (s+1)*B*A*W)``; micro-batch a of
rank r reads ``B`` of them starting at ``s*B*A*W + (a*W + r)*B``. So a resumed run needs only the step
number, and 2 processes with A=1 read exactly what 1 process with A=2 reads (the 2-process test relies on
this). Classification uses the same scheme over labelled documents.

Mixing (`MixedLMBatches`): a share s of the positions reads a general corpus instead of the domain one, so a
student specialised on the domain keeps some general ability. Position p is general exactly when
``floor((p+1)*s) > floor(p*s)`` (s as a small fraction, integer arithmetic): every window of positions holds
the share to within one row, and the general and domain streams are each indexed by how many of their
positions came before p. That keeps the whole mapping a function of p, so resume and data parallelism are
unchanged.
"""

from __future__ import annotations

from fractions import Fraction

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


class MixedLMBatches:
    """Domain rows with a fixed ``share`` of rows from a general corpus.

    ``rows`` is the domain's packed rows followed by the general ones, and the row ids ``batch`` returns
    index into it (so the teacher's top-k cache keys both corpora).
    """

    def __init__(self, domain: LMBatches, general: LMBatches, share: float):
        if not 0 <= share < 1:
            raise ValueError(f"share {share} must be in [0, 1)")
        frac = Fraction(share).limit_denominator(1000)  # 0.1 -> 1/10 exactly
        self.num, self.den = frac.numerator, frac.denominator
        self.domain, self.general = domain, general
        self.rows = torch.cat([domain.rows, general.rows])  # (N_domain + N_general, T)

    def __len__(self) -> int:
        return self.rows.shape[0]

    def general_before(self, p: int) -> int:
        """How many of positions ``[0, p)`` read the general corpus."""
        return p * self.num // self.den

    def batch(self, start: int, count: int) -> tuple[torch.Tensor, dict]:
        ids = []
        for p in range(start, start + count):
            g = self.general_before(p)
            if self.general_before(p + 1) > g:
                ids.append(len(self.domain) + self.general.pos.indices(g, 1)[0])
            else:
                ids.append(self.domain.pos.indices(p - g, 1)[0])
        idx = torch.tensor(ids)
        return idx, {"input_ids": self.rows[idx]}


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
