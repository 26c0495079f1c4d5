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
        self.kwargs: list[dict] = []
        first = model.adapter.layers()[0]

        def catch(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            self.hidden.append(h.detach())
            self.kwargs.append({k: v for k, v in kwargs.items() if k != "hidden_states"})
            raise _Stop

        handle = first.register_forward_pre_hook(catch, with_kwargs=True)
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
            handle.remove()

    @property
    def tokens(self) -> int:
        return sum(h.shape[0] * h.shape[1] for h in self.hidden)

    @torch.inference_mode()
    def run(self, layer: nn.Module) -> list[torch.Tensor]:
        outs = []
        for h, kw in zip(self.hidden, self.kwargs, strict=True):
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
