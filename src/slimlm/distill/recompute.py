"""Activation checkpointing on a Hugging Face model: each block's activations are recomputed in the backward
pass instead of being kept from the forward pass (less memory, one more forward pass of the blocks, the same
gradients). Used by distillation (``gradient_checkpointing``) and QAT."""

from __future__ import annotations

from contextlib import contextmanager

from torch import nn

from slimlm.errors import ConfigError


def is_on(hf: nn.Module) -> bool:
    on = getattr(hf, "is_activation_checkpointing", None)
    if on is None:  # transformers before the rename
        on = getattr(hf, "is_gradient_checkpointing", False)
    return bool(on)


def turn_on(hf: nn.Module) -> bool:
    """Turn activation checkpointing on; True when this call turned it on (False: it already was), so the
    caller turns it off again with `turn_off` only then. A model without support is a `ConfigError`."""
    if is_on(hf):
        return False
    if not getattr(hf, "supports_gradient_checkpointing", False):
        raise ConfigError(f"{type(hf).__name__} does not support gradient checkpointing; leave it off.")
    # non-reentrant: works with frozen embeddings (inputs without gradients), with custom autograd functions
    # (QAT's fake-quantized linears) and keeps the dropout RNG
    kwargs = {"use_reentrant": False}
    if hasattr(hf, "activation_checkpointing_enable"):
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return True


def turn_off(hf: nn.Module) -> None:
    (getattr(hf, "activation_checkpointing_disable", None) or hf.gradient_checkpointing_disable)()


@contextmanager
def recompute_in_eval_mode(hf: nn.Module, enabled: bool = True):
    """Activation checkpointing for a model that trains in eval mode (QAT: no dropout). transformers only
    checkpoints a block whose ``training`` flag is set, so that flag alone is set on the checkpointed blocks
    (not on their children: dropout and the attention's dropout stay off). Everything is put back on exit."""
    if not enabled:
        yield False
        return
    turned_on = turn_on(hf)
    blocks = [m for m in hf.modules() if m is not hf and getattr(m, "gradient_checkpointing", False) is True]
    flags = [b.training for b in blocks]
    try:
        for b in blocks:
            b.training = True  # this module only, not recursively (nn.Module.train would reach the dropouts)
        yield True
    finally:
        for b, f in zip(blocks, flags, strict=True):
            b.training = f
        if turned_on:
            turn_off(hf)
