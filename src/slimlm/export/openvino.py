"""OpenVINO IR through ``openvino.convert_model`` from our ONNX graph, with NNCF weight compression.

optimum-intel pins transformers < 4.58, so the conversion is OpenVINO's own. Its PyTorch front end traces
with TorchScript, which fails on transformers 5's mask code (``aten::diff``); the ONNX front end takes the
graph `slimlm.export.onnx` writes (torch.export based) without trouble, so that is the route. The IR is that
graph: one decoder step with explicit ``past.*`` inputs and ``present.*`` outputs (an empty past is the
prefill). `OvDecoder` decodes with OpenVINO's own ``MakeStateful`` pass, which turns each past/present pair
into internal state (what optimum-intel's stateful models do), so the cache stays in the plugin between
tokens instead of crossing into Python and back.

``int8`` compresses every MatMul/embedding weight to int8 (asymmetric, per output channel). ``int4``
compresses them to int4, asymmetric, in groups of ``group_size`` (NNCF keeps the embeddings and the last
layer in int8, its default rules), and, given calibration tokens, data-aware: AWQ (activation-aware
per-channel scales) and scale estimation (group scales that minimise the layer's output error on the
calibration activations). On SmolLM2-135M (Shakespeare check, 512 tokens, 2026-12-01) the int4 perplexity
change was: symmetric g64 +29.1%, asymmetric g64 +26.7%, asymmetric g32 +18.8%; with data asymmetric g32 +
AWQ +19.9%, + scale estimation +9.3%, + both +6.2% (both: 221 s wall on 16 x 128 calibration tokens,
measured while a distillation ran beside it; on the graph without a KV cache). Both types are weight-only:
activations stay fp32 and OpenVINO's CPU plugin decompresses on the fly.

Precision. On a CPU with AVX512-BF16 or AMX the CPU plugin computes in bf16 unless told otherwise. The export
check asks for f32, so its figure is the file's: SmolLM2-135M's fp32 IR on the default check sample (512
tokens, 2026-12-01) reads -3e-7 relative perplexity change in f32 and +0.090% in the plugin's bf16, which is
most of fp32's 0.1% tolerance. Runtime profiling (`OvDecoder`) keeps the plugin's default, what a deployment
gets, and records which it was (``inference_precision``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimlm.export.onnx import empty_past


def write_openvino(hf: nn.Module, out: Path, precision: str, group_size: int = 32,
                   calib: torch.Tensor | None = None) -> tuple[Path, dict]:
    """Write ``hf`` as OpenVINO IR in ``out``; ``calib``: ``(n, seq_len)`` token ids for data-aware int4."""
    import tempfile

    import openvino as ov

    from slimlm.export.onnx import write_onnx

    with tempfile.TemporaryDirectory(dir=out) as tmp:
        onnx_path, onnx_info = write_onnx(hf, Path(tmp), "fp32")
        ov_model = ov.convert_model(str(onnx_path))
    info: dict = {"kv_cache": onnx_info["kv_cache"]}
    if precision in ("int8", "int4"):
        rows = None
        if precision == "int4" and calib is not None:
            inputs = _inputs(ov_model)
            rows = [{"input_ids": calib[i:i + 1].numpy().astype("int64"), **empty_past(inputs, 1)}
                    for i in range(calib.shape[0])]
            info["data_aware"] = ("awq+scale_estimation", int(calib.numel()))
        elif precision == "int4":
            info["data_aware"] = None
        ov_model = compress(ov_model, precision, group_size, rows)
        info["group_size"] = group_size if precision == "int4" else None
    path = out / "openvino_model.xml"
    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    return path, info


def compress(ov_model, precision: str, group_size: int = 32, rows: list[dict] | None = None):
    """NNCF weight compression: ``int8`` (asymmetric, per output channel) or ``int4`` (asymmetric, groups of
    ``group_size``; with calibration input ``rows``, AWQ and scale estimation). NNCF's bit-width table and
    progress bar go to stderr, not to the stdout that ``--json`` owns."""
    import nncf

    with _nncf_off_stdout():
        if precision == "int8":
            return nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_ASYM)
        data = {} if not rows else {"dataset": nncf.Dataset(rows), "awq": True, "scale_estimation": True,
                                    "subset_size": len(rows)}
        return nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=group_size,
                                     ratio=1.0, advanced_parameters=nncf.AdvancedCompressionParameters(
                                         group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST), **data)


@contextlib.contextmanager
def _nncf_off_stdout():
    from nncf.common.logging import nncf_logger

    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        nncf_logger.setLevel(level)


def _inputs(ov_model) -> list[tuple[str, list]]:
    """``(name, shape)`` of each input, dynamic dimensions as -1."""
    return [(p.get_any_name(), [d.get_length() if d.is_static else -1 for d in p.get_partial_shape()])
            for p in ov_model.inputs]


def plugin_config(threads: int, precision_hint: str | None) -> dict:
    """The CPU plugin's settings: ``threads`` threads; ``precision_hint`` ``f32`` runs the file as written,
    None keeps the plugin's default (bf16 on a CPU with AVX512-BF16 or AMX: a deployment choice, faster there,
    and not what the file holds)."""
    config = {"INFERENCE_NUM_THREADS": threads}
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    return config


def plugin_precision(compiled) -> str:
    """The inference precision a compiled model runs at, e.g. ``bf16`` or ``f32``."""
    return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def openvino_logits_fn(path: Path, threads: int = 1, precision_hint: str | None = "f32"):
    """``fn(ids (batch, T)) -> logits (batch, T, vocab)`` on OpenVINO's CPU plugin (an empty past: the prefill).

    ``precision_hint``: see `plugin_config`; f32 by default, so an export check measures the file.
    """
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    inputs = _inputs(model)
    compiled = core.compile_model(model, "CPU", plugin_config(threads, precision_hint))
    logits = compiled.output("logits") if any(n.startswith("past.") for n, _ in inputs) else compiled.output(0)

    def fn(ids: torch.Tensor):
        res = compiled({"input_ids": ids.numpy().astype("int64"), **empty_past(inputs, ids.shape[0])})
        return torch.from_numpy(res[logits])

    fn.inference_precision = plugin_precision(compiled)
    return fn


class OvDecoder:
    """An OpenVINO export with its KV cache made internal state (``MakeStateful``), batch 1: ``reset()``,
    then ``eval(tokens)`` returns the last position's logits ``(vocab,)``; ``logits(ids)`` is the prefill
    (on the same compiled model for one row, so a profile holds one copy of the weights). ``kv`` is False for
    an export without past inputs (written before the KV graph), which cannot decode incrementally.

    It runs at the plugin's default precision (``precision_hint=None``, see `plugin_config`): what a
    deployment gets; ``inference_precision`` says which that is.
    """

    def __init__(self, path: Path, threads: int = 1, precision_hint: str | None = None):
        import openvino as ov

        self._path, self._threads, self._plain, self._hint = path, threads, None, precision_hint
        self.inference_precision = None
        core = ov.Core()
        model = core.read_model(str(path))
        names = [n for n, _ in _inputs(model)]
        self.kv = any(n.startswith("past.") for n in names)
        self.n_vocab = model.output(0).get_partial_shape()[-1].get_length()
        if not self.kv:
            self._plain = openvino_logits_fn(path, threads, precision_hint)
            self.inference_precision = self._plain.inference_precision
            return
        from openvino.passes import MakeStateful, Manager

        model.reshape({p.get_any_name(): _batch1(p.get_partial_shape()) for p in model.inputs})
        params = {p.get_any_name(): p.get_node() for p in model.inputs}
        results = {o.get_any_name(): o.get_node() for o in model.outputs}
        manager = Manager()
        manager.register_pass(MakeStateful([(params[n], results[n.replace("past.", "present.", 1)])
                                            for n in names if n.startswith("past.")]))
        manager.run_passes(model)
        compiled = core.compile_model(model, "CPU", plugin_config(threads, precision_hint))
        self.inference_precision = plugin_precision(compiled)
        self.request = compiled.create_infer_request()
        self._logits = compiled.output("logits")

    def reset(self) -> None:
        self.request.reset_state()

    def eval(self, tokens: list[int]) -> np.ndarray:
        self.request.infer({"input_ids": np.asarray([tokens], np.int64)})
        return self.request.get_tensor(self._logits).data[0, -1].copy()

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """``(batch, T)`` ids -> ``(batch, T, vocab)`` logits from an empty cache."""
        if self.kv and ids.shape[0] == 1:
            self.reset()
            self.request.infer({"input_ids": ids.numpy().astype(np.int64)})
            return torch.from_numpy(self.request.get_tensor(self._logits).data.copy())
        if self._plain is None:  # several rows, or an export without a KV graph: the model as written
            self._plain = openvino_logits_fn(self._path, self._threads, self._hint)
        return self._plain(ids)


def _batch1(shape):
    shape[0] = 1
    return shape
