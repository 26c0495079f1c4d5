"""ONNX for ONNX Runtime, through ``torch.onnx`` (optimum-onnx pins transformers < 4.58, below what we run).

The graph is the prefill function ``input_ids (batch, seq) -> logits (batch, seq, vocab)`` without a KV
cache, exported with dynamic batch and sequence axes. ``int8`` applies ONNX Runtime's dynamic quantization
(int8 weights per output channel, activations quantized per tensor at run time) to every MatMul with a
constant weight. Its activation scales are per tensor, so one outlier channel costs the whole tensor its
resolution: `slimlm.export.export` first applies SmoothQuant (strength 0.8 by default) to a copy of the model,
which moves the outliers into the weights (per output channel there), then exports; the check shows what the
int8 costs on the model at hand.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class _Logits(nn.Module):
    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=input_ids, use_cache=False).logits


def write_onnx(hf: nn.Module, out: Path, precision: str) -> tuple[Path, dict]:
    """Export ``hf`` to ``out/model.onnx`` (and ``out/model.int8.onnx`` for int8); returns (main file, info)."""
    path = out / "model.onnx"
    ids = torch.randint(0, hf.config.vocab_size, (2, 16))
    batch, seq = torch.export.Dim("batch", min=1, max=256), torch.export.Dim("seq", min=2, max=8192)
    with torch.inference_mode(False), torch.no_grad():
        prog = torch.onnx.export(_Logits(hf.eval()), (ids,), dynamo=True, input_names=["input_ids"],
                                 output_names=["logits"], dynamic_shapes=({0: batch, 1: seq},),
                                 external_data=False, verbose=False)
    prog.save(str(path))
    info = {"opset": int(prog.model.opset_imports.get("", 0)) if hasattr(prog, "model") else None}
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        q = out / "model.int8.onnx"
        # weights only: activation x activation MatMuls (attention scores, attention x values) stay fp32.
        # reduce_range (7-bit weights): without it, per-channel int8 on CPUs without VNNI saturates the u8 x s8
        # multiply-adds; SmolLM2's perplexity went from 54 to 6.9 million (with it: 89, per-tensor: 105)
        quantize_dynamic(str(path), str(q), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True})
        path.unlink()
        path = q
    return path, info


def onnx_logits_fn(path: Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def fn(ids: torch.Tensor):
        return torch.from_numpy(sess.run(["logits"], {"input_ids": ids.numpy().astype("int64")})[0])

    return fn
