"""ONNX for ONNX Runtime, through ``torch.onnx`` (optimum-onnx pins transformers < 4.58, below what we run).

The graph is one decoder step with a KV cache: ``input_ids (batch, seq)`` and each layer's past keys and
values ``past.{i}.key`` / ``past.{i}.value`` ``(batch, kv_heads, past, head_dim)`` in, ``logits (batch,
seq, vocab)`` and ``present.{i}.key`` / ``present.{i}.value`` (``past + seq`` long) out, exported with
dynamic batch, sequence and past axes. A past of length 0 makes it the prefill function (what the export
check and prefill timing feed); feeding the presents back with one new token is a decode step, as
optimum's merged decoders do. Sliding-window layers (Gemma, Mistral) keep their whole past; the window is
applied by the attention mask, so the results match transformers' at any length.

``int8`` applies ONNX Runtime's dynamic quantization (int8 weights per output channel, activations quantized
per tensor at run time) to every MatMul with a constant weight. Its activation scales are per tensor, so one
outlier channel costs the whole tensor its resolution: `slimlm.export.export` first applies SmoothQuant
(strength 0.8 by default) to a copy of the model, which moves the outliers into the weights (per output
channel there), then exports; the check shows what the int8 costs on the model at hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimlm.models.decoding import cache_arg, cache_of


def quiet_exporter() -> None:
    """torch.onnx's exporter warns, on every export, that torchvision's ops are not registered when
    torchvision is not installed: nothing slimlm exports uses them."""
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def cache_shapes(hf: nn.Module) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Per layer, ``((kv_heads, key_dim), (kv_heads, value_dim))`` of ``hf``'s KV cache, read from one
    forward pass (so pruned heads and widths, GQA and per-family head sizes are whatever the model has)."""
    with torch.no_grad():
        cache = cache_of(hf(input_ids=torch.zeros(1, 1, dtype=torch.long), use_cache=True))
    return [((layer.keys.shape[1], layer.keys.shape[3]), (layer.values.shape[1], layer.values.shape[3]))
            for layer in cache.layers]


class _Step(nn.Module):
    """One decoder step: ``(input_ids, [(past_key, past_value), ...]) -> (logits, [(key, value), ...])``."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

    def forward(self, input_ids: torch.Tensor, past: list[tuple[torch.Tensor, torch.Tensor]]):
        from transformers import DynamicCache

        cache = DynamicCache()  # full layers: a sliding window comes from the mask, not from cropping
        for i, (k, v) in enumerate(past):
            cache.update(k, v, i)
        out = self.hf(input_ids=input_ids, use_cache=True, **{cache_arg(self.hf): cache})
        return out.logits, [(layer.keys, layer.values) for layer in cache_of(out).layers]


def past_names(n_layers: int, kind: str = "past") -> list[str]:
    return [f"{kind}.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]


def write_onnx(hf: nn.Module, out: Path, precision: str) -> tuple[Path, dict]:
    """Export ``hf`` to ``out/model.onnx`` (and ``out/model.int8.onnx`` for int8); returns (main file, info)."""
    path = out / "model.onnx"
    hf = hf.eval()
    shapes = cache_shapes(hf)
    ids = torch.randint(0, hf.config.vocab_size, (2, 3))
    past = [(torch.zeros(2, kh, 5, kd), torch.zeros(2, vh, 5, vd)) for (kh, kd), (vh, vd) in shapes]
    dim = torch.export.Dim
    batch, seq = dim("batch", min=1, max=256), dim("seq", min=1, max=8192)
    plen = dim("past", min=0, max=8192)
    dynamic = ({0: batch, 1: seq}, [({0: batch, 2: plen}, {0: batch, 2: plen}) for _ in shapes])
    quiet_exporter()
    with torch.inference_mode(False), torch.no_grad():
        prog = torch.onnx.export(_Step(hf), (ids, past), dynamo=True,
                                 input_names=["input_ids", *past_names(len(shapes))],
                                 output_names=["logits", *past_names(len(shapes), "present")],
                                 dynamic_shapes=dynamic, external_data=False, verbose=False)
    prog.save(str(path))
    info = {"opset": int(prog.model.opset_imports.get("", 0)) if hasattr(prog, "model") else None,
            "kv_cache": True}
    if precision == "int8":
        path = quantize_int8(path)
    return path, info


def quantize_int8(path: Path) -> Path:
    """ONNX Runtime's dynamic int8 of ``path`` into ``model.int8.onnx`` beside it (the fp32 file is removed):
    int8 weights per output channel on every MatMul with a constant weight."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    q = path.with_name("model.int8.onnx")
    # weights only: activation x activation MatMuls (attention scores, attention x values) stay fp32.
    # reduce_range (7-bit weights): without it, per-channel int8 on CPUs without VNNI saturates the u8 x s8
    # multiply-adds; SmolLM2's perplexity went from 54 to 6.9 million (with it: 89, per-tensor: 105)
    quantize_dynamic(str(path), str(q), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                     op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True})
    path.unlink()
    return q


def empty_past(inputs, batch: int) -> dict[str, np.ndarray]:
    """Zero-length past arrays for a graph's ``past.*`` inputs (``(name, shape)`` pairs; dims 1 and 3 static)."""
    return {name: np.zeros((batch, shape[1], 0, shape[3]), np.float32) for name, shape in inputs
            if name.startswith("past.")}


class OrtDecoder:
    """An ONNX export in ONNX Runtime with the KV cache kept between calls, as `slimlm.export.llamacpp.LlamaCpp`:
    ``reset()``, then ``eval(tokens)`` returns the last position's logits ``(vocab,)``."""

    def __init__(self, path: Path, threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, i.shape) for i in self.sess.get_inputs()]
        self.outputs = [o.name for o in self.sess.get_outputs()]
        self.kv = len(self.inputs) > 1  # exports before the KV graph take input_ids only
        self.n_vocab = int(self.sess.get_outputs()[0].shape[-1])
        self.past: dict[str, np.ndarray] = {}

    def run(self, ids: np.ndarray, past: dict[str, np.ndarray] | None = None,
            outputs: list[str] | None = None) -> list[np.ndarray]:
        feed = {"input_ids": ids.astype(np.int64)}
        if self.kv:
            feed.update(past if past is not None else empty_past(self.inputs, ids.shape[0]))
        return self.sess.run(outputs or self.outputs, feed)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """``(batch, T)`` ids -> ``(batch, T, vocab)`` logits with an empty past: the prefill."""
        return torch.from_numpy(self.run(ids.numpy(), outputs=["logits"])[0])

    def reset(self) -> None:
        self.past = {}

    def eval(self, tokens: list[int]) -> np.ndarray:
        res = self.run(np.asarray([tokens]), self.past or None)
        self.past = {name.replace("present.", "past.", 1): a for name, a in zip(self.outputs[1:], res[1:], strict=True)}
        return res[0][0, -1]


def onnx_logits_fn(path: Path, threads: int = 1):
    """``fn(ids (batch, T)) -> logits (batch, T, vocab)`` on ONNX Runtime (an empty past: the prefill)."""
    return OrtDecoder(path, threads).logits
