"""Calibration statistics gathered with forward hooks in one pass over the calibration batch.

Two statistics: the per-input-channel max |x| (SmoothQuant) and the input Gram matrix ``X^T X`` (GPTQ's
Hessian). Linears that read the same input tensor (q/k/v, gate/up) share one accumulator. The trade-off
against layer-by-layer GPTQ: the Hessians come from the fp32 model's activations rather than from inputs
already perturbed by the quantized layers below, which costs a little accuracy and saves a second pass
through every layer.
"""

from __future__ import annotations

import torch
from torch import nn

from slimlm._progress import or_noop


@torch.inference_mode()
def run_batches(hf: nn.Module, rows: torch.Tensor, batch_size: int = 4, progress=None, desc: str = "calibrate"):
    progress = or_noop(progress)
    n = rows.shape[0]
    for i in range(0, n, batch_size):
        hf(rows[i : i + batch_size])
        progress(desc, min(i + batch_size, n), n)


class InputStats:
    """Accumulate ``absmax`` (in,) and optionally ``gram`` (in, in) of each hooked Linear's input."""

    def __init__(self, linears: dict[str, nn.Linear], gram: bool = False, absmax: bool = False):
        self.linears, self.want_gram, self.want_absmax = linears, gram, absmax
        self.key: dict[str, int] = {}  # linear name -> accumulator id
        self.gram: dict[int, torch.Tensor] = {}
        self.absmax: dict[int, torch.Tensor] = {}
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
            if self.want_absmax:
                m = x2.abs().amax(0)
                self.absmax[acc] = torch.maximum(self.absmax[acc], m) if acc in self.absmax else m
            if self.want_gram:
                g = x2.t() @ x2  # (in, in)
                self.gram[acc] = self.gram[acc] + g if acc in self.gram else g
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

    def hessian(self, name: str) -> torch.Tensor:
        acc = self.key[name]
        return self.gram[acc] * (2.0 / self.count[acc])

    def act_absmax(self, name: str) -> torch.Tensor:
        return self.absmax[self.key[name]]
