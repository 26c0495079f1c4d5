"""Importance of blocks, heads, FFN channels and hidden channels, from calibration activations.

All but Taylor use one dense layer-by-layer pass (`LayerRunner`), so their cost is one forward of the
calibration set. Taylor needs gradients and runs full forward/backward passes in small batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimlm._progress import or_noop
from slimlm.calibration import Calibration
from slimlm.models import FamilyAdapter, Model
from slimlm.prune.calibrate import LayerRunner, forward_kwargs


def _hook_inputs(mod: nn.Module, fn) -> torch.utils.hooks.RemovableHandle:
    return mod.register_forward_hook(lambda m, args, out: fn(args[0].detach().float()))


def _hook_outputs(mod: nn.Module, fn) -> torch.utils.hooks.RemovableHandle:
    return mod.register_forward_hook(lambda m, args, out: fn((out[0] if isinstance(out, tuple) else out).detach().float()))


def block_influence(model: Model, calib: Calibration, progress=None) -> list[float]:
    """Per block: mean over tokens of 1 − cos(h_in, h_out) (ShortGPT). Low = the block changes little."""
    progress = or_noop(progress)
    runner = LayerRunner(model, calib.tokens, calib.batch_size, progress)
    layers = model.adapter.layers()
    scores = []
    for i, layer in enumerate(layers):
        outs = runner.run(layer)
        cos = [F.cosine_similarity(h.float(), o.float(), dim=-1).mean() for h, o in zip(runner.hidden, outs, strict=True)]
        scores.append(1.0 - torch.stack(cos).mean().item())
        runner.advance(outs=outs)
        progress("block influence", i + 1, len(layers))
    return scores


class _Skip:
    """Context manager: block ``layer`` returns its input unchanged (the layer is 'removed')."""

    def __init__(self, layer: nn.Module):
        self.layer = layer

    def __enter__(self):
        def hook(module, args, kwargs, out):
            h = args[0] if args else kwargs["hidden_states"]
            return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h

        self.handle = self.layer.register_forward_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@torch.inference_mode()
def _quality_loss(model: Model, tokens: torch.Tensor, batch_size: int, reference: list | None = None):
    """Causal LM: mean next-token loss. Encoder: 1 − cos to the reference outputs (returned when None)."""
    losses, outs = [], []
    for j, batch in enumerate(tokens.split(batch_size)):
        if model.adapter.causal:
            losses.append(model.hf(input_ids=batch, labels=batch, **forward_kwargs(model)).loss.item())
        else:
            h = model.hf(input_ids=batch).last_hidden_state if not hasattr(model.hf, "classifier") else \
                model.hf(input_ids=batch, output_hidden_states=True).hidden_states[-1]
            outs.append(h)
            if reference is not None:
                losses.append(1 - F.cosine_similarity(h, reference[j], dim=-1).mean().item())
    if reference is None and not model.adapter.causal:
        return 0.0, outs
    return sum(losses) / len(losses), outs


def layer_loss_increase(model: Model, calib: Calibration, progress=None) -> list[float]:
    """Per block: calibration loss with that block skipped, minus the dense loss (the block's contribution)."""
    progress = or_noop(progress)
    base, ref = _quality_loss(model, calib.tokens, calib.batch_size)
    layers = model.adapter.layers()
    out = []
    for i, layer in enumerate(layers):
        with _Skip(layer):
            loss, _ = _quality_loss(model, calib.tokens, calib.batch_size, ref or None)
        out.append(loss - base)
        progress("layer perplexity contribution", i + 1, len(layers))
    return out


def head_activation(model: Model, calib: Calibration, progress=None) -> list[torch.Tensor]:
    """Per block: (heads,) mean L2 norm over tokens of each query head's output (the input of o)."""
    progress = or_noop(progress)
    a = model.adapter
    runner = LayerRunner(model, calib.tokens, calib.batch_size, progress)
    scores = []
    for i, layer in enumerate(a.layers()):
        acc = torch.zeros(a.num_heads, dtype=torch.float64)
        count = [0]

        def fn(x, acc=acc, count=count):
            x = x.reshape(-1, a.num_heads, a.head_dim)  # (tokens, heads, head_dim)
            acc.add_(x.norm(dim=-1).sum(0).double())
            count[0] += x.shape[0]

        h = _hook_inputs(a.attention(layer).o, fn)
        runner.advance(layer)
        h.remove()
        scores.append((acc / max(count[0], 1)).float())
        progress("head importance", i + 1, a.num_layers)
    return scores


def ffn_activation(model: Model, calib: Calibration, progress=None) -> list[torch.Tensor]:
    """Per block: (intermediate,) mean |activation| entering down (Minitron's activation importance)."""
    progress = or_noop(progress)
    a = model.adapter
    runner = LayerRunner(model, calib.tokens, calib.batch_size, progress)
    scores = []
    for i, layer in enumerate(a.layers()):
        acc = torch.zeros(a.intermediate_size, dtype=torch.float64)
        count = [0]

        def fn(x, acc=acc, count=count):
            x = x.reshape(-1, x.shape[-1])
            acc.add_(x.abs().sum(0).double())
            count[0] += x.shape[0]

        h = _hook_inputs(a.mlp(layer).down, fn)
        runner.advance(layer)
        h.remove()
        scores.append((acc / max(count[0], 1)).float())
        progress("ffn importance", i + 1, a.num_layers)
    return scores


def ffn_taylor(model: Model, calib: Calibration, progress=None, batch_size: int = 2) -> list[torch.Tensor]:
    """Per block: (intermediate,) Σ over tokens |a · ∂L/∂a| for the activation a entering down (first-order Taylor)."""
    progress = or_noop(progress)
    a = model.adapter
    layers = list(a.layers())
    scores = [torch.zeros(a.intermediate_size, dtype=torch.float64) for _ in layers]
    acts: dict[int, torch.Tensor] = {}
    handles = []
    for i, layer in enumerate(layers):
        def pre(module, args, i=i):
            args[0].retain_grad()
            acts[i] = args[0]

        handles.append(a.mlp(layer).down.register_forward_pre_hook(pre))
    batches = calib.tokens.split(batch_size)
    was_training = model.hf.training
    try:
        for j, batch in enumerate(batches):
            model.hf.zero_grad(set_to_none=True)
            with torch.enable_grad():
                loss = model.hf(input_ids=batch, labels=batch, use_cache=False).loss
                loss.backward()
            for i, x in acts.items():
                scores[i] += (x.detach() * x.grad).abs().reshape(-1, x.shape[-1]).sum(0).double()
            acts.clear()
            progress("ffn taylor importance", j + 1, len(batches))
    finally:
        for h in handles:
            h.remove()
        model.hf.zero_grad(set_to_none=True)
        model.hf.train(was_training)
    return [s.float() for s in scores]


def _hidden_norms(a: FamilyAdapter) -> list[nn.Module]:
    """Norms whose outputs span the hidden channels: every block's, the final one, and BERT's embeddings
    LayerNorm (post-norm: block 0 reads it; the block norms' outputs are the residual stream itself)."""
    norms = [n for layer in a.layers() for n in a.norms(layer)]
    if a.final_norm() is not None:
        norms.append(a.final_norm())
    if a.family == "bert":
        norms.append(a.base().embeddings.LayerNorm)
    return norms


def hidden_activation(model: Model, calib: Calibration, progress=None) -> torch.Tensor:
    """(hidden,) Σ over norms of mean |normed activation| per channel (Minitron's embedding-channel importance)."""
    progress = or_noop(progress)
    a = model.adapter
    acc = torch.zeros(a.hidden_size, dtype=torch.float64)

    def fn(x):
        acc.add_(x.reshape(-1, x.shape[-1]).abs().mean(0).double())

    norms = _hidden_norms(a)
    handles = [_hook_outputs(n, fn) for n in norms]
    try:
        with torch.inference_mode():
            batches = calib.tokens.split(calib.batch_size)
            for j, batch in enumerate(batches):
                model.hf(input_ids=batch, **forward_kwargs(model))
                progress("hidden importance", j + 1, len(batches))
    finally:
        for h in handles:
            h.remove()
    return acc.float()
