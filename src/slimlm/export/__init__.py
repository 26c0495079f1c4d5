"""Export a variant to the runtimes CPU and edge deployments use: llama.cpp (GGUF), ONNX Runtime, OpenVINO.

``export(model, fmt, out)`` writes the runtime's files into ``out`` (a new directory, replaced atomically;
a directory slimlm did not write is never overwritten), then checks them on the way out: the exported
model's perplexity on a fixed sample must be within the precision's tolerance of the variant's
(`slimlm.export.check.TOLERANCES`), else `ExportCheckError`. ``export.json`` in ``out`` records the format,
precision, files, sizes and the check.

- ``gguf``: ``f32|f16|bf16|q8_0|q5_0|q5_1|q4_0|q4_1`` via the ``gguf`` package (a core dependency), and
  llama.cpp's K-quant mixes ``q4_k_s|q4_k_m|q5_k_s|q5_k_m|q6_k`` quantized by llama.cpp itself (needs
  ``pip install 'slimlm[export]'``); checked on llama.cpp when it is installed (`slimlm.export.llamacpp`),
  else by reading the file back with transformers' own GGUF loader.
- ``onnx``: ``fp32`` or ``int8`` (ONNX Runtime dynamic quantization, per-channel weights) via ``torch.onnx``;
  checked with ONNX Runtime. Needs ``pip install 'slimlm[export]'``.
- ``openvino``: ``fp32``, ``int8`` or ``int4`` weight compression (NNCF) via ``openvino.convert_model``;
  checked with OpenVINO's CPU plugin. Needs ``pip install 'slimlm[export]'``.
- ``transformers``: a slimlm-quantized variant (int8-weight, int8-dynamic, int4-weight) in torchao's format,
  which plain ``AutoModelForCausalLM.from_pretrained`` loads with no slimlm installed
  (`slimlm.quantize.portable`); checked by loading it back that way.

optimum-onnx / optimum-intel are not used: their releases pin transformers below the 5.x this project runs.
The ONNX and OpenVINO graphs are one decoder step with a KV cache: ``input_ids`` (batch, sequence) and each
layer's ``past.{i}.key|value`` in, logits (batch, sequence, vocab) and ``present.{i}.key|value`` out; an
empty past is the prefill (`slimlm.export.onnx`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from slimlm._io import atomic_dir, write_json_atomic
from slimlm.errors import ConfigError, SpecError
from slimlm.export.check import (
    TOLERANCES,
    ExportCheckError,
    compare,
    perplexity,
    sample_windows,
    tokenizer_agreement,
    torch_logits,
)
from slimlm.export.check import sample_text as sample_text_of
from slimlm.export.outdir import MANIFEST
from slimlm.export.outdir import check_out as _check_out
from slimlm.export.outdir import need as _need

FORMATS = {"gguf": ("f16", ("f32", "f16", "bf16", "q8_0", "q5_0", "q5_1", "q4_0", "q4_1",
                            "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")),
           "onnx": ("fp32", ("fp32", "int8")),
           "openvino": ("fp32", ("fp32", "int8", "int4")),
           "transformers": ("auto", ("auto",))}


def export(model, fmt: str, out: str | Path, *, precision: str | None = None, check: bool = True,
           sample_text: str | None = None, tolerance: float | None = None, group_size: int = 32,
           smoothquant: float | None | str = "auto", calib_data: str = "shakespeare", data_aware: bool = True,
           sample_shape: tuple[int, int] = (4, 128), progress=None) -> dict:
    """Export ``model`` (a `slimlm.models.Model`: causal LM, or encoder for onnx/openvino) to ``fmt``; check it.

    Args:
        model: the variant; slimlm-quantized layers are dequantized first (the export quantizes in the
            runtime's own format).
        fmt: ``gguf``, ``onnx`` or ``openvino``.
        out: the output directory (created; replaced only if an earlier export wrote it).
        precision: the runtime's type (see the module docstring); default f16 for GGUF, fp32 otherwise.
        check: compare perplexity on a fixed sample and raise `ExportCheckError` beyond the tolerance.
        sample_text: text for the check (default: the start of the Shakespeare eval split).
        tolerance: override the precision's relative perplexity tolerance.
        sample_shape: ``(windows, tokens)`` of the check sample (default 4 x 128: fast, enough to catch a
            wrong conversion; a quality comparison between models wants more, e.g. 8 x 512).
        group_size: OpenVINO int4 group size.
        data_aware: calibrate the low-bit types on 16 x 128 tokens of ``calib_data``'s calibration split:
            OpenVINO int4 with AWQ and scale estimation (`slimlm.export.openvino`); GGUF 4/5-bit and K-quant
            types with an importance matrix, as ``llama-imatrix`` + ``llama-quantize --imatrix`` (needs
            llama.cpp; without it they are rounded to nearest). False: from the weights alone.
        smoothquant: ONNX int8 only: SmoothQuant strength applied (to a copy) before the export, so that ONNX
            Runtime's per-tensor activation quantization meets smaller outliers; ``auto`` is 0.8 for ONNX int8
            (`ONNX_INT8_SMOOTHQUANT`), None turns it off.
        calib_data: data spec whose calibration split gives SmoothQuant its activation ranges (ONNX int8) and
            data-aware int4 its activations (OpenVINO).
        progress: optional callable taking a status string.

    Returns:
        ``{"out", "format", "precision", "type", "files": {name: bytes}, "check": {...} | None, "seconds"}``
        (``type``: the precision, the GGUF file type, or a torchao copy's scheme); export.json holds the same.

    Example:
        >>> export(load("tiny:llama"), "gguf", "out/tiny-gguf", precision="q8_0")["check"]["passed"]
        True
    """
    say = progress or (lambda _msg: None)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}.")
    default, allowed = FORMATS[fmt]
    precision = (precision or default).lower()
    if precision not in allowed:
        raise ConfigError(f"{fmt} precision {precision!r} is not supported; use one of {', '.join(allowed)}.")
    if model.task != "causal-lm":  # BERT-family encoders: ONNX / OpenVINO only, checked on outputs (export.encoder)
        from slimlm.export.encoder import export_encoder

        return export_encoder(model, fmt, precision, Path(out), check=check, sample_text=sample_text,
                              tolerance=tolerance, group_size=group_size, sample_shape=sample_shape, progress=progress)
    out = Path(out).expanduser()
    _check_out(out)
    if fmt in ("onnx", "openvino"):
        _need("onnx" if fmt == "onnx" else "openvino")
    from slimlm.quantize.portable import float_model

    start = time.perf_counter()
    hf = float_model(model.hf)
    windows = sample_windows(model, sample_text, *sample_shape) if check else None
    with atomic_dir(out, marker=MANIFEST) as tmp:
        if fmt == "gguf":
            from slimlm.export.gguf import IMATRIX_TYPES, check_supported, importance_matrix, write_gguf
            from slimlm.export.llamacpp import available as llamacpp_available

            check_supported(hf, precision)
            imatrix = None
            if data_aware and precision in IMATRIX_TYPES and llamacpp_available():
                say(f"importance matrix on {calib_data} (mean squared activations per column)")
                imatrix = importance_matrix(hf, _calibration_tokens(model, calib_data))
            say(f"writing GGUF {precision}")
            path = tmp / f"model-{precision}.gguf"
            info = write_gguf(model, hf, path, precision, imatrix)
            info["imatrix"] = {"data": calib_data, "tokens": CALIB_ROWS * CALIB_SEQ} if imatrix else None
            runner = (lambda: _gguf_reader(path, hf.config, info, windows)) if check else None
        elif fmt == "onnx":
            from slimlm.export.onnx import onnx_logits_fn, write_onnx

            alpha = (ONNX_INT8_SMOOTHQUANT if smoothquant == "auto" else smoothquant) if precision == "int8" else None
            src = hf
            if alpha is not None:
                say(f"SmoothQuant {alpha:g} on {calib_data} before ONNX Runtime's int8")
                src = smoothed_copy(model, hf, float(alpha), calib_data)
            say(f"exporting ONNX {precision}")
            path, info = write_onnx(src, tmp, precision)
            info["smoothquant"] = alpha
            model.tokenizer.save_pretrained(tmp)
            runner = (lambda: (onnx_logits_fn(path), "onnxruntime")) if check else None
        elif fmt == "transformers":
            from slimlm.quantize.portable import save_transformers

            say("writing a torchao copy for plain transformers")
            info = save_transformers(model, tmp)
            precision = info["scheme"]
            path = tmp / "model.safetensors"
            runner = (lambda: (_plain_logits_fn(tmp), "plain transformers from_pretrained")) if check else None
        else:
            from slimlm.export.openvino import openvino_logits_fn, write_openvino

            calib = None
            if precision == "int4" and data_aware:
                say(f"data-aware int4 (AWQ + scale estimation) on {calib_data}")
                calib = _calibration_tokens(model, calib_data)
            say(f"converting to OpenVINO {precision}")
            path, info = write_openvino(hf, tmp, precision, group_size, calib)
            model.tokenizer.save_pretrained(tmp)
            runner = (lambda: (openvino_logits_fn(path), "openvino CPU")) if check else None
        result = None
        if check:
            say("checking perplexity of the export against the variant")
            ref = perplexity(torch_logits(model.hf), windows)
            fn, reader = runner()
            got = perplexity(fn, windows)
            result = compare(ref, got, precision, f"{fmt} {precision} export of {model.spec}", tolerance)
            result["reader"] = reader
            result["tokens"] = int(windows.numel())
            result["sample_shape"] = list(sample_shape)
            if getattr(fn, "llm", None) is not None:  # llama.cpp: the file's own tokenizer, on the same text
                say("checking the export's tokenizer against the variant's")
                result["tokenizer"] = tokenizer_agreement(
                    model.tokenizer, fn.llm.tokenize, sample_text_of(sample_text, *sample_shape),
                    f"{fmt} {precision} export of {model.spec}")
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"format": fmt, "precision": precision, "model": str(model.spec), "main_file": path.name,
                    "files": files, "check": result, "type": info.get("scheme", precision), **info,
                    "source_hash": model.provenance.get("hash")}
        write_json_atomic(tmp / MANIFEST, manifest)
    return {"out": str(out), "format": fmt, "precision": precision, "main_file": str(out / path.name),
            "files": files, "check": result, "type": info.get("scheme", precision),
            "seconds": time.perf_counter() - start, **info}


CALIB_ROWS, CALIB_SEQ = 16, 128  # calibration tokens of the data-aware low-bit exports


def _calibration_tokens(model, calib_data: str, rows: int = CALIB_ROWS, seq_len: int = CALIB_SEQ):
    """``(rows, seq_len)`` windows of ``calib_data``'s calibration split (capped at the model's positions)."""
    from slimlm.data import calibration_batch, load_data

    return calibration_batch(model.tokenizer, load_data(calib_data), rows,
                             min(seq_len, model.adapter.max_positions or seq_len))


#: SmoothQuant strength applied before ONNX Runtime's dynamic int8 by default (see `export`). On SmolLM2-135M
#: (Shakespeare check, 2026-12-01) the int8 export's perplexity change was +65% without it and +25.6%, +9.7%,
#: +17.2%, +22.5% at 0.5, 0.8, 0.9, 1.0; the check still guards every other model.
ONNX_INT8_SMOOTHQUANT = 0.8


def smoothed_copy(model, hf, alpha: float, calib_data: str, rows: int = 16, seq_len: int = 256):
    """A copy of ``hf`` with SmoothQuant ``alpha`` applied to every block's smoothing pairs (fp32-equivalent)."""
    import copy

    import torch

    from slimlm.calibration import InputStats, run_batches
    from slimlm.quantize.smoothquant import smooth_

    if not 0 <= alpha <= 1:
        raise ConfigError(f"SmoothQuant strength {alpha} must be in [0, 1].")
    hf = copy.deepcopy(hf).eval()
    ad = model.adapter.__class__(hf)
    linears = dict(ad.block_linears())
    tokens = _calibration_tokens(model, calib_data, rows, seq_len)
    with torch.inference_mode(), InputStats(linears, absmax=True) as stats:
        run_batches(hf, tokens)
    absmax = {id(m): stats.act_absmax(n) for n, m in linears.items()}
    with torch.no_grad():
        smooth_(ad, absmax, alpha)
    return hf


def _gguf_reader(path: Path, config, info: dict, windows):
    """The GGUF check's logits: llama.cpp itself when installed (it cannot load a byte-level BPE vocabulary
    without merges, which only slimlm's tiny test tokenizers lack), else transformers' GGUF reader."""
    from slimlm.export import llamacpp
    from slimlm.export.gguf import gguf_logits_fn

    if llamacpp.available() and (info.get("bpe_merges") or info["tokenizer"]["model"] == "llama"):
        return (llamacpp.logits_fn(path, threads=1, n_ctx=int(windows.shape[1])),
                f"{llamacpp.describe()}, 1 thread")
    return gguf_logits_fn(path, config)


def _plain_logits_fn(directory: Path):
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    return torch_logits(hf.eval())


def read_manifest(out: str | Path) -> dict:
    """``export.json`` of an export directory."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise SpecError(f"{out} is not a slimlm export directory (no {MANIFEST}).")
    return json.loads(path.read_text())


__all__ = ["FORMATS", "TOLERANCES", "ExportCheckError", "export", "read_manifest"]
