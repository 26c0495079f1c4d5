"""Calibration data and statistics, shared by every calibrated method (pruning and quantization).

`Calibration` is what a calibrated stage is given: token windows ``(n, seq_len)`` from the corpus'
calibration split, plus the corpus' texts (``vocab=domain`` keeps the tokens they use). `InputStats`
gathers statistics of Linear inputs with forward pre-hooks during any forward pass: squared column norms
(Wanda), per-channel max |x| (SmoothQuant) and the Gram matrix ``X^T X`` (GPTQ's and SparseGPT's Hessian).
Linears that read the very same input tensor (q/k/v, gate/up) share one accumulator, so each statistic is
computed once per input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from slimlm._progress import or_noop
from slimlm.errors import DataError

if TYPE_CHECKING:
    from slimlm.models import Model


@dataclass
class Calibration:
    """Token windows ``(n, seq_len)`` plus, optionally, the texts that define a domain vocabulary."""

    tokens: torch.Tensor
    texts: list[str] = field(default_factory=list)
    batch_size: int = 8


def make_calibration(model: Model, corpus, n: int = 128, seq_len: int = 512, seed: int = 0,
                     batch_size: int = 8, general=None, general_share: float = 0.0) -> Calibration:
    """Sample ``n`` windows from the corpus' calibration split; keep every split's text for ``vocab=domain``.

    With a ``general`` corpus and ``general_share`` > 0, ``round(n * general_share)`` of the windows come from
    the general corpus's calibration split instead (the domain vocabulary still comes from ``corpus`` only).

    Example:
        >>> calib = make_calibration(model, load_data("shakespeare"), n=16, seq_len=128)
    """
    from slimlm.data import calibration_batch

    limit = model.adapter.max_positions
    if limit and seq_len > limit:
        raise DataError(f"--calib-seq-len {seq_len} exceeds the model's {limit} positions; use at most {limit}.")
    n_general = min(n - 1, round(n * general_share)) if general is not None and general_share > 0 else 0
    tokens = calibration_batch(model.tokenizer, corpus, n - n_general, seq_len, seed=seed)
    if n_general:
        extra = calibration_batch(model.tokenizer, general, n_general, seq_len, seed=seed)
        tokens = torch.cat([tokens, extra])[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    return Calibration(tokens=tokens, texts=corpus_texts(corpus), batch_size=batch_size)


def corpus_texts(corpus) -> list[str]:
    """Every document's text in every split of ``corpus``, each once (user files repeat one document in every
    split): the texts whose tokens ``vocab=domain`` keeps."""
    texts: list[str] = []
    seen: set[int] = set()
    for docs in corpus.splits.values():
        for d in docs:
            if id(d) not in seen:
                seen.add(id(d))
                texts.append(d.text)
    return texts


def as_calibration(calib) -> Calibration | None:
    if calib is None or isinstance(calib, Calibration):
        return calib
    if isinstance(calib, torch.Tensor):
        if calib.dim() != 2:
            raise DataError(f"calibration tokens must be (n, seq_len); got shape {tuple(calib.shape)}.")
        return Calibration(tokens=calib.long())
    raise DataError("calib must be a Calibration, a (n, seq_len) LongTensor of token ids, or None.")


@torch.inference_mode()
def run_batches(hf: nn.Module, rows: torch.Tensor, batch_size: int = 4, progress=None, desc: str = "calibrate"):
    progress = or_noop(progress)
    n = rows.shape[0]
    for i in range(0, n, batch_size):
        hf(rows[i : i + batch_size])
        progress(desc, min(i + batch_size, n), n)


class InputStats:
    """Accumulate statistics of each hooked Linear's input (a context manager: hooks live inside ``with``).

    Args:
        linears: name -> module whose input is measured.
        norms: squared column norms ``sum_t x_tj^2`` (in,), float64.
        absmax: per-channel ``max_t |x_tj|`` (in,).
        gram: ``X^T X`` (in, in), float32.

    Example:
        >>> with InputStats({"q": layer.q_proj}, norms=True) as stats:
        ...     model(tokens)
        >>> stats.norm("q").shape
    """

    def __init__(self, linears: dict[str, nn.Module], *, norms: bool = False, absmax: bool = False,
                 gram: bool = False):
        self.linears, self.want_norms, self.want_absmax, self.want_gram = linears, norms, absmax, gram
        self.key: dict[str, int] = {}  # linear name -> accumulator id
        self._sq: dict[int, torch.Tensor] = {}
        self._gram: dict[int, torch.Tensor] = {}
        self._absmax: dict[int, torch.Tensor] = {}
        self.count: dict[int, int] = {}
        self._last: torch.Tensor | None = None  # a strong reference, so its identity cannot be reused
        self._last_acc = -1
        self._handles: list = []

    def _hook(self, name: str):
        def fn(mod, args):
            x = args[0]
            shared = x is self._last  # q/k/v (gate/up) read the very same tensor object
            if name not in self.key:
                self.key[name] = self._last_acc if shared else len(self.count)
                self.count.setdefault(self.key[name], 0)
            acc = self.key[name]
            if shared and acc == self._last_acc:
                return
            self._last, self._last_acc = x, acc
            x2 = x.detach().reshape(-1, x.shape[-1]).float()  # (tokens, in)
            if self.want_norms:
                sq = x2.pow(2).sum(0).double()
                self._sq[acc] = self._sq[acc] + sq if acc in self._sq else sq
            if self.want_absmax:
                m = x2.abs().amax(0)
                self._absmax[acc] = torch.maximum(self._absmax[acc], m) if acc in self._absmax else m
            if self.want_gram:
                g = x2.t() @ x2  # (in, in)
                self._gram[acc] = self._gram[acc] + g if acc in self._gram else g
            self.count[acc] += x2.shape[0]

        return fn

    def __enter__(self) -> InputStats:
        for name, mod in self.linears.items():
            self._handles.append(mod.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._last = None

    def tokens(self, name: str) -> int:
        return self.count[self.key[name]]

    def norm(self, name: str) -> torch.Tensor:
        """Column norms ``||X_j||`` (in,), float64."""
        return self._sq[self.key[name]].sqrt()

    def gram(self, name: str) -> torch.Tensor:
        """``X^T X`` summed over tokens (in, in)."""
        return self._gram[self.key[name]]

    def hessian(self, name: str) -> torch.Tensor:
        """GPTQ's Hessian of the layer-wise squared error: ``2 X^T X / tokens``."""
        acc = self.key[name]
        return self._gram[acc] * (2.0 / self.count[acc])

    def act_absmax(self, name: str) -> torch.Tensor:
        return self._absmax[self.key[name]]
