"""The teacher in reduced precision while it distils: weights stored in bfloat16, computed in float32.

A teacher runs without gradients, so its only memory is its weights: 2 GB for a 0.5B model in float32, the
largest single block of a distillation's peak after the student's AdamW state. `teacher_precision` stores the
weights of the teacher's linear and embedding layers in bfloat16 (half the bytes; bfloat16 keeps float32's
exponent range, so nothing overflows) and upcasts each linear's weight to the activation dtype inside its
forward and each embedding's output to float32. Activations, norms, biases, attention and the logits stay float32, so the arithmetic is float32's:
the only error is bfloat16's rounding of the weights (relative 2^-8 per weight).

Why weight storage and not a bfloat16 forward: on a CPU without AVX512-BF16 or AMX, bfloat16 matrix products
run several times slower than float32 (8x for a 1024 x 896 x 4864 product on an AVX2 EPYC), while the upcast
of one weight costs a copy of it. On an accelerator the same path still halves the teacher's memory.

The float32 weights are written to a slimlm temp directory in the cache (``teacher-stash``; a killed run's
is swept by the next one) and restored when distillation ends (the pipeline evaluates and reuses the same
teacher afterwards), so the teacher leaves exactly as it came.

``precision="auto"`` (the default) reduces teachers of at least `AUTO_PARAMS` parameters and leaves smaller
ones in float32, where the memory does not matter and the weights' rounding is not worth paying for.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from slimlm._io import scratch_dir

Precision = Literal["auto", "float32", "bfloat16"]

#: teachers at or above this size are stored in bfloat16 by ``precision="auto"`` (a 0.5B model: 2 GB -> 1 GB)
AUTO_PARAMS = 300_000_000


def resolve(precision: Precision, teacher_params: int) -> str:
    """``float32`` or ``bfloat16``: what ``precision`` means for a teacher of ``teacher_params`` parameters."""
    if precision == "auto":
        return "bfloat16" if teacher_params >= AUTO_PARAMS else "float32"
    return precision


def _linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


def _upcast_output(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    return output.float()


def _targets(module: nn.Module) -> list[nn.Module]:
    """Plain linears (their forward is replaced) and embeddings of any class (their output is upcast by a hook,
    so subclasses such as Gemma's scaled embedding keep their own forward)."""
    return [m for m in module.modules()
            if (type(m) is nn.Linear or isinstance(m, nn.Embedding)) and m.weight.dtype == torch.float32]


@contextmanager
def teacher_precision(hf: nn.Module | None, precision: str) -> Iterator[dict]:
    """Within the block, ``hf``'s linear and embedding weights are stored in ``precision`` (see module).

    Yields a dict with ``precision`` and ``bytes_saved``. ``float32`` (or no teacher) changes nothing.
    """
    info = {"precision": "float32", "bytes_saved": 0}
    if hf is None or precision == "float32":
        yield info
        return
    if precision != "bfloat16":
        raise ValueError(f"teacher precision must be float32 or bfloat16, got {precision!r}")
    targets = _targets(hf)
    params = {id(m.weight): m.weight for m in targets}  # tied weights appear once
    tmp = scratch_dir("teacher-stash", "stash")  # a killed run's stash is swept
    stash, hooks = {}, []
    try:
        for key, p in params.items():  # one tensor at a time: memory falls as it goes
            path = tmp / f"{len(stash)}.pt"
            torch.save(p.data, path)
            stash[key] = path
            p.data = p.data.to(torch.bfloat16)
            info["bytes_saved"] += p.numel() * 2
        for m in targets:
            if isinstance(m, nn.Embedding):
                hooks.append(m.register_forward_hook(_upcast_output))
            else:
                m.forward = _linear_forward.__get__(m)
        info["precision"] = "bfloat16"
        yield info
    finally:
        for h in hooks:
            h.remove()
        for m in targets:
            m.__dict__.pop("forward", None)
        for key, p in params.items():
            if key in stash:
                p.data = torch.load(stash[key], map_location=p.device, weights_only=True)
        shutil.rmtree(tmp, ignore_errors=True)
