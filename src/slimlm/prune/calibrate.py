"""Calibration plumbing: what a pruning method is given, and layer-by-layer forward passes.

`Calibration` carries the token windows used for statistics and (for ``vocab=domain``) the domain's texts.
`LayerRunner` captures the inputs of the first block once, then runs the calibration set through one block
at a time: a method collects statistics on block i, edits it, and the runner feeds block i's (edited)
outputs to block i+1. Only one block's activations live at a time, so SparseGPT on a 135M model needs
about (n × seq_len × hidden) floats, not a full forward graph. The trade-off: a method sees every block's
inputs as produced by the already pruned blocks before it (what OBS-style methods want), at the price of
running each block twice (statistics, then outputs after the edit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from slimlm._progress import or_noop
from slimlm.errors import DataError
from slimlm.models import Model


@dataclass
class Calibration:
    """Token windows ``(n, seq_len)`` plus, optionally, the texts that define a domain vocabulary."""

    tokens: torch.Tensor
    texts: list[str] = field(default_factory=list)
    batch_size: int = 8


def make_calibration(model: Model, corpus, n: int = 128, seq_len: int = 512, seed: int = 0,
                     batch_size: int = 8) -> Calibration:
    """Sample ``n`` windows from the corpus' calibration split; keep every split's text for ``vocab=domain``.

    Example:
        >>> calib = make_calibration(model, load_data("shakespeare"), n=16, seq_len=128)
    """
    from slimlm.data import calibration_batch

    limit = model.adapter.max_positions
    if limit and seq_len > limit:
        raise DataError(f"--calib-seq-len {seq_len} exceeds the model's {limit} positions; use at most {limit}.")
    tokens = calibration_batch(model.tokenizer, corpus, n, seq_len, seed=seed)
    texts: list[str] = []
    seen: set[int] = set()
    for docs in corpus.splits.values():
        for d in docs:
            if id(d) not in seen:  # user files repeat one document in every split
                seen.add(id(d))
                texts.append(d.text)
    return Calibration(tokens=tokens, texts=texts, batch_size=batch_size)


def as_calibration(calib) -> Calibration | None:
    if calib is None or isinstance(calib, Calibration):
        return calib
    if isinstance(calib, torch.Tensor):
        if calib.dim() != 2:
            raise DataError(f"calibration tokens must be (n, seq_len); got shape {tuple(calib.shape)}.")
        return Calibration(tokens=calib.long())
    raise DataError("calib must be a Calibration, a (n, seq_len) LongTensor of token ids, or None.")


class _Stop(Exception):
    pass


class _Recorder(nn.Module):
    """Stands in for block ``index`` during `LayerRunner`'s first pass: records what the model passes it."""

    def __init__(self, layer: nn.Module, runner: LayerRunner, index: int):
        super().__init__()
        self.index, self._runner = index, [runner]  # a list: not registered as a submodule
        self.attention_type = getattr(layer, "attention_type", None)  # Gemma picks mask and rope by it
        self.last = index == len(runner._kwargs) - 1

    def forward(self, *args, **kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        runner = self._runner[0]
        if self.index == 0:
            runner.hidden.append(h.detach())
        runner._kwargs[self.index].append({k: v for k, v in kwargs.items() if k != "hidden_states"})
        if self.last:
            raise _Stop
        return h


def _forward_kwargs(model: Model) -> dict:
    return {"use_cache": False} if model.adapter.causal else {}


class LayerRunner:
    """Run calibration batches through the model's blocks one at a time.

    Example:
        >>> runner = LayerRunner(model, calib.tokens)
        >>> for i, layer in enumerate(model.adapter.layers()):
        ...     outs = runner.run(layer)      # statistics hooks fire here
        ...     runner.advance(layer)         # or runner.advance(outs=outs) if the layer was not changed
    """

    def __init__(self, model: Model, tokens: torch.Tensor, batch_size: int = 8, progress=None):
        self.model = model
        self.hidden: list[torch.Tensor] = []  # per batch (B, T, H)
        # per layer, per batch: the keyword arguments the model gives that block. They differ between blocks
        # where layers alternate sliding-window and global attention (Gemma 2/3: another mask and, on Gemma 3,
        # another rotary embedding), so every block's own are recorded: the blocks are swapped for recorders
        # that return their input unchanged, so one pass costs about one embedding lookup.
        layers = model.adapter.layers()
        self._index = {id(layer): i for i, layer in enumerate(layers)}
        self._kwargs: list[list[dict]] = [[] for _ in layers]
        originals = list(layers)
        for i, layer in enumerate(originals):
            layers[i] = _Recorder(layer, self, i)
        progress = or_noop(progress)
        batches = tokens.split(batch_size)
        try:
            with torch.inference_mode():
                for i, batch in enumerate(batches):
                    try:
                        model.hf(input_ids=batch, **_forward_kwargs(model))
                    except _Stop:
                        pass
                    progress("embed calibration", i + 1, len(batches))
        finally:
            for i, layer in enumerate(originals):
                layers[i] = layer

    @property
    def kwargs(self) -> list[dict]:
        """The first block's keyword arguments, per batch."""
        return self._kwargs[0]

    def _kwargs_for(self, layer: nn.Module) -> list[dict]:
        return self._kwargs[self._index.get(id(layer), 0)]

    @property
    def tokens(self) -> int:
        return sum(h.shape[0] * h.shape[1] for h in self.hidden)

    @torch.inference_mode()
    def run(self, layer: nn.Module) -> list[torch.Tensor]:
        outs = []
        for h, kw in zip(self.hidden, self._kwargs_for(layer), strict=True):
            o = layer(h, **kw)
            outs.append(o[0] if isinstance(o, tuple) else o)
        return outs

    def advance(self, layer: nn.Module | None = None, outs: list[torch.Tensor] | None = None) -> None:
        """Replace the current inputs by ``layer``'s outputs (or by ``outs`` already computed)."""
        self.hidden = outs if outs is not None else self.run(layer)


@dataclass
class InputStats:
    """Statistics of a Linear's input over calibration tokens: squared column norms and optionally X^T X."""

    sq_norm: torch.Tensor
    hessian: torch.Tensor | None = None
    tokens: int = 0

    @property
    def norm(self) -> torch.Tensor:
        return self.sq_norm.sqrt()


def collect_inputs(modules: dict[str, nn.Module], hessian: bool) -> tuple[dict[str, InputStats], Callable[[], None]]:
    """Hook ``modules`` (name -> module) to accumulate input statistics; returns (stats, remove_hooks)."""
    stats: dict[str, InputStats] = {}
    handles = []
    for name, mod in modules.items():
        n_in = mod.weight.shape[1]
        stats[name] = InputStats(torch.zeros(n_in, dtype=torch.float64),
                                 torch.zeros(n_in, n_in, dtype=torch.float32) if hessian else None)

        def hook(module, args, _out, s=stats[name]):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()  # (tokens, in)
            s.sq_norm += x.pow(2).sum(0).double()
            if s.hessian is not None:
                s.hessian.addmm_(x.T, x)
            s.tokens += x.shape[0]

        handles.append(mod.register_forward_hook(hook))

    def remove() -> None:
        for h in handles:
            h.remove()

    return stats, remove


def input_groups(model: Model, layer: nn.Module) -> dict[str, list[nn.Linear]]:
    """The layer's Linears grouped by shared input (q/k/v; o; gate/up; down): one statistic per group."""
    a, m = model.adapter.attention(layer), model.adapter.mlp(layer)
    groups = {"qkv": [a.q, a.k, a.v], "o": [a.o], "up": [x for x in (m.gate, m.up) if x is not None], "down": [m.down]}
    inside = {id(x) for g in groups.values() for x in g}
    for name, mod in layer.named_modules():  # any other Linear in the block gets its own statistic
        if isinstance(mod, nn.Linear) and id(mod) not in inside:
            groups[name] = [mod]
    return groups
