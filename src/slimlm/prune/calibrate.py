"""Layer-by-layer forward passes over calibration data for pruning (`Calibration` and the input statistics
are shared with quantization in `slimlm.calibration`).

`LayerRunner` captures the inputs of the first block once, then runs the calibration set through one block
at a time: a method collects statistics on block i, edits it, and the runner feeds block i's (edited)
outputs to block i+1. Only one block's activations live at a time, so SparseGPT on a 135M model needs
about (n × seq_len × hidden) floats, not a full forward graph. The trade-off: a method sees every block's
inputs as produced by the already pruned blocks before it (what OBS-style methods want), at the price of
running each block twice (statistics, then outputs after the edit).
"""

from __future__ import annotations

import torch
from torch import nn

from slimlm._progress import or_noop
from slimlm.models import Model


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


def forward_kwargs(model: Model) -> dict:
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
                        model.hf(input_ids=batch, **forward_kwargs(model))
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


def input_groups(model: Model, layer: nn.Module) -> dict[str, list[nn.Linear]]:
    """The layer's Linears grouped by shared input (q/k/v; o; gate/up; down): one statistic per group."""
    a, m = model.adapter.attention(layer), model.adapter.mlp(layer)
    groups = {"qkv": [a.q, a.k, a.v], "o": [a.o], "up": [x for x in (m.gate, m.up) if x is not None], "down": [m.down]}
    inside = {id(x) for g in groups.values() for x in g}
    for name, mod in layer.named_modules():  # any other Linear in the block gets its own statistic
        if isinstance(mod, nn.Linear) and id(mod) not in inside:
            groups[name] = [mod]
    return groups
