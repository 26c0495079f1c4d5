"""`slimlm profile --runtime` and `compress`/`search --runtime`: the profile protocol on a deployment runtime:
ONNX Runtime, OpenVINO, llama.cpp (or torch, the default, in `slimlm.profile`).

Each model is exported with `slimlm.export` into a directory (a temporary one, or one the caller owns such as
``<run>/exports/<variant>-<runtime>`` where an earlier export of the same weights is reused), loaded into the
runtime with the same fixed thread count, and timed like `slimlm.profile.compare` does on torch: warm-up
runs, then repeated prefill timings per ``BxS`` shape, interleaved model by model, with ratios against the
first model on the same runtime.

A slimlm-quantized variant runs as the runtime's own equivalent type (`EQUIVALENT`: int8-dynamic -> ONNX
Runtime dynamic int8; int8-weight -> OpenVINO int8 / GGUF q8_0; int4-weight -> OpenVINO int4 / GGUF q4_1,
or q4_0 when it is on Q4_0's symmetric grid in groups of 32),
never silently as a dequantized fp32 copy. A scheme the runtime has no equivalent for (int4 in ONNX,
int8-dynamic in OpenVINO or GGUF) is refused with the reason (`runtime_type`); ``--type`` forces a type.

Decode tokens/s: every runtime decodes with its KV cache, one token per call after an 8-token prompt:
llama.cpp's own cache, ONNX Runtime feeding the graph's ``present.*`` outputs back as ``past.*`` inputs,
OpenVINO with the cache made internal state (`slimlm.export.openvino.OvDecoder`). An ONNX / OpenVINO export
written before the KV graph (input_ids only) has no decode (None) rather than a figure from re-running the
whole prefix. Disk is the exported file(s); peak RSS (``memory=True``) is each export's own process
(`slimlm.export.rssprobe`): load, one prefill at the largest shape, one decode, as `slimlm.profile` does.

Encoders (BERT family) profile on ONNX Runtime and OpenVINO: the prefill protocol on the encoder's graph
(`slimlm.export.encoder`, every position unmasked), no decode; llama.cpp refuses them. OpenVINO runs at its
CPU plugin's default inference precision (bf16 where the CPU has it), recorded as ``inference_precision``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from slimlm._progress import or_noop
from slimlm.errors import ConfigError

RUNTIMES = {"onnxruntime": ("onnx", "fp32", "onnxruntime"), "openvino": ("openvino", "fp32", "openvino"),
            "llamacpp": ("gguf", "f16", "xllamacpp")}
PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "llamacpp": "xllamacpp (llama.cpp)"}

#: the runtime's own type for a variant, by its slimlm quantization scheme (None: not quantized); a scheme
#: missing here has no equivalent on that runtime (see `CANNOT`)
EQUIVALENT: dict[str, dict[str | None, str]] = {
    "onnxruntime": {None: "fp32", "int8-dynamic": "int8"},
    "openvino": {None: "fp32", "int8-weight": "int8", "int4-weight": "int4"},
    "llamacpp": {None: "f16", "int8-weight": "q8_0", "int4-weight": "q4_1"},
}
CANNOT = {
    "onnxruntime": "slimlm's ONNX export has fp32 and ONNX Runtime's dynamic int8 (int8 activations too) only",
    "openvino": "OpenVINO's weight compression (int8, int4) keeps activations in float; it has no int8-dynamic",
    "llamacpp": "GGUF has weight-only types (q8_0, q4_1...), not slimlm's int8-activation scheme",
}


def check_runtime(runtime: str) -> None:
    """Fail fast, before any heavy work: an unknown runtime name, or its Python package not installed.

    Raises:
        ConfigError: one sentence naming the runtime or the missing package and how to install it.
    """
    if runtime == "torch":
        return
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; use torch, {', '.join(RUNTIMES)}.")
    if runtime == "llamacpp":
        from slimlm.export.llamacpp import available

        found = available()  # xllamacpp, or the user's own build (SLIMLM_LLAMACPP_LIB)
    else:
        found = importlib.util.find_spec(RUNTIMES[runtime][2]) is not None
    if not found:
        hint = "pip install 'slimlm[export]'" + (" (or set SLIMLM_LLAMACPP_LIB to the libllama.so of your own "
                                                 "llama.cpp build)" if runtime == "llamacpp" else "")
        raise ConfigError(f"--runtime {runtime} needs the {PACKAGES[runtime]} package, which is not installed; "
                          f"{hint}.")


def variant_scheme(hf: torch.nn.Module) -> tuple[str | None, int | None]:
    """(slimlm quantization scheme of the Linear layers, int4 group size): (None, None) for a float model,
    ``"mixed"`` when layers hold several schemes. An int8 embedding alone does not count (exports keep it float)."""
    from slimlm.models.qlayers import QuantEmbedding, QuantModule

    layers = [m for m in hf.modules() if isinstance(m, QuantModule) and not isinstance(m, QuantEmbedding)]
    kinds = {m.kind for m in layers}
    if not kinds:
        return None, None
    if len(kinds) > 1:
        return "mixed", None
    return kinds.pop(), getattr(layers[0], "group_size", None)


def runtime_type(model, runtime: str) -> tuple[str | None, str | None]:
    """The runtime's type for ``model`` (a `slimlm.models.Model`), or why the runtime cannot take it.

    Returns:
        ``(type, None)``, e.g. ``("int8", None)`` for an int8-dynamic variant on ONNX Runtime; or
        ``(None, reason)``, e.g. for an int4-weight variant on ONNX Runtime.
    """
    scheme, _ = variant_scheme(model.hf)
    if runtime not in EQUIVALENT:
        raise ConfigError(f"unknown runtime {runtime!r}; use torch, {', '.join(RUNTIMES)}.")
    if model.task != "causal-lm" and runtime == "llamacpp":
        return None, ("llama.cpp profiling takes causal language models only (slimlm's GGUF export is decoder-only); "
                      "profile this encoder on onnxruntime or openvino")
    if scheme == "mixed":
        return None, f"the variant mixes several quantization schemes; {runtime} takes one"
    if scheme not in EQUIVALENT[runtime]:
        return None, f"{runtime} cannot run slimlm's {scheme} variant as it is: {CANNOT[runtime]}"
    if runtime == "llamacpp" and scheme == "int4-weight" and _q4_0_grid(model.hf):
        return "q4_0", None  # the variant's own grid: the export reproduces its weights
    return EQUIVALENT[runtime][scheme], None


def _q4_0_grid(hf: torch.nn.Module) -> bool:
    """Every int4 layer on llama.cpp's Q4_0 grid: symmetric (zero point 8) in groups of Q4_0's 32-wide block."""
    from slimlm.models.qlayers import Int4WeightLinear

    layers = [m for m in hf.modules() if isinstance(m, Int4WeightLinear)]
    return bool(layers) and all(m.symmetric and m.group_size == 32 for m in layers)


def runtime_export(model, runtime: str, out: str | Path, *, precision: str | None = None, check: bool = False,
                   sample_text: str | None = None, tolerance: float | None = None,
                   sample_shape: tuple[int, int] = (4, 128), progress=None) -> dict:
    """Export ``model`` for ``runtime`` into ``out``, or reuse the export already there.

    An earlier export in ``out`` is reused when it was written from the same weights (content hash), in the
    same format and type, and (with ``check``) passed its check; otherwise it is replaced.

    Args:
        model: a `slimlm.models.Model` (causal LM).
        runtime: ``onnxruntime``, ``openvino`` or ``llamacpp``.
        out: the export directory (slimlm's: an existing directory not written by slimlm export is refused).
        precision: the runtime's type; default `runtime_type` (raises `ConfigError` when there is none).
        check: run the export's perplexity check (`slimlm.export.export`; raises `ExportCheckError`).
        sample_text: text for the check.
        tolerance: override the type's relative perplexity tolerance (`slimlm.export.export`).
        sample_shape: the check sample's ``(windows, tokens)`` (`slimlm.export.export`).

    Returns:
        `slimlm.export.export`'s result, plus ``reused`` (bool).
    """
    from slimlm.export import MANIFEST, export, read_manifest

    if model.task != "causal-lm" and runtime == "llamacpp":  # --type does not change that
        raise ConfigError(f"{model.spec}: {runtime_type(model, runtime)[1]}.")
    fmt = RUNTIMES[runtime][0]
    if precision is None:
        precision, why = runtime_type(model, runtime)
        if why:
            raise ConfigError(f"{model.spec}: {why}; pass --type to export it as another type anyway.")
    out = Path(out)
    source = model.provenance.get("hash")
    if source and (out / MANIFEST).is_file():
        man = read_manifest(out)
        if (man.get("source_hash") == source and man.get("format") == fmt and man.get("precision") == precision
                and (out / man.get("main_file", "")).is_file()
                and (not check or (man.get("check") or {}).get("passed"))
                and (tolerance is None or (man.get("check") or {}).get("tolerance") == tolerance)
                and (not check or tuple((man.get("check") or {}).get("sample_shape", (4, 128))) == tuple(sample_shape))):
            return {"out": str(out), "format": fmt, "precision": precision, "main_file": str(out / man["main_file"]),
                    "files": man["files"], "check": man.get("check"), "seconds": 0.0, "reused": True}
    _, group = variant_scheme(model.hf)
    res = export(model, fmt, out, precision=precision, check=check, sample_text=sample_text, tolerance=tolerance,
                 group_size=group or 32, sample_shape=sample_shape, progress=progress)
    return {**res, "reused": False}


def _p(times: list[float]) -> dict:
    ms = sorted(t * 1000 for t in times)
    k = lambda q: ms[min(int(round((len(ms) - 1) * q)), len(ms) - 1)]  # noqa: E731
    return {"p50": statistics.median(ms), "p90": k(0.9), "p99": k(0.99), "mean": statistics.fmean(ms), "n": len(ms)}


class _Session:
    """One exported model loaded in a runtime: ``prefill(ids)`` and ``decode(n)`` (None: an encoder, or an
    export without a KV-cache graph, as ONNX / OpenVINO exports written before it had).

    ``inference_precision``: OpenVINO's CPU plugin precision in use (its default: bf16 on a CPU with
    AVX512-BF16 or AMX, f32 elsewhere; the deployment's default, while export checks ask for f32); else None.
    """

    def __init__(self, runtime: str, path: Path, threads: int, n_ctx: int, task: str = "causal-lm"):
        self.runtime, self.decode, self.inference_precision = runtime, None, None
        if task != "causal-lm":  # an encoder: one forward over the batch, with an all-ones attention mask
            from slimlm.export import encoder

            if runtime == "onnxruntime":
                fn = encoder.onnx_encoder_fn(path, threads)
            elif runtime == "openvino":
                fn = encoder.openvino_encoder_fn(path, threads, precision_hint=None)
                self.inference_precision = fn.inference_precision
            else:
                raise ConfigError(f"{runtime} does not run encoders; use onnxruntime or openvino.")
            self.prefill = lambda ids: fn(ids, torch.ones_like(ids))
            return
        if runtime in ("onnxruntime", "openvino"):  # one loaded model serves prefill and decode
            if runtime == "onnxruntime":
                from slimlm.export.onnx import OrtDecoder as Decoder
            else:
                from slimlm.export.openvino import OvDecoder as Decoder
            dec = Decoder(path, threads)
            self.prefill = dec.logits
            self.inference_precision = getattr(dec, "inference_precision", None)
        else:  # llama.cpp through its C API (slimlm.export.llamacpp)
            from slimlm.export.llamacpp import LlamaCpp

            dec = LlamaCpp(path, threads=threads, n_ctx=n_ctx)

            def prefill(ids: torch.Tensor):
                for row in ids.tolist():  # llama.cpp evaluates one sequence at a time
                    dec.reset()
                    dec.eval(row)

            self.prefill = prefill
        self.llm = dec
        if getattr(dec, "kv", True):
            self.decode = self._decode

    def _decode(self, n: int) -> float:
        """As slimlm.profile: 8 prompt tokens, then ``n`` greedy tokens, one call each with the KV cache;
        returns tokens/s of the ``n``."""
        llm = self.llm
        prompt = torch.randint(0, llm.n_vocab, (8,), generator=torch.Generator().manual_seed(8)).tolist()
        llm.reset()
        last = llm.eval(prompt)
        t = time.perf_counter()
        for _ in range(n):
            last = llm.eval([int(last.argmax())])
        return n / (time.perf_counter() - t)


def peak_rss(runtime: str, path: str | Path, *, task: str = "causal-lm", shape: tuple[int, int] = (1, 128),
             decode: int = 0, threads: int = 1, vocab: int = 256) -> dict:
    """Run the probe on ``path`` in a fresh process: ``{"peak_rss_mb", "loaded_rss_mb", "start_rss_mb"}``, or
    ``{"peak_rss_mb": None, "error": [last stderr line]}`` when the probe failed."""
    from slimlm.profile.memprobe import run_probe

    return run_probe("slimlm.export.rssprobe", [runtime, str(path), "--task", task, "--shape", f"{shape[0]}x{shape[1]}",
                                                "--decode", str(decode), "--threads", str(threads), "--vocab", str(vocab)])


def as_brought(model) -> dict | None:
    """A model loaded from a ``.gguf`` file and not changed since: that file, to run in llama.cpp as it is (a
    `runtime_export`-like dict, ``as_brought`` True), so ``profile model-q4_1.gguf --runtime llamacpp``
    times the user's Q4_1 file rather than an f16 re-export of its dequantized weights; else None."""
    src = model.provenance.get("source_file")
    if not str(model.spec).endswith(".gguf") or not src or model.provenance.get("stages"):
        return None
    from slimlm.export.gguf import file_type_of

    path = Path(src)
    return {"out": str(path.parent), "format": "gguf", "precision": file_type_of(path), "main_file": str(path),
            "files": {path.name: path.stat().st_size}, "check": None, "reused": True, "as_brought": True}


def compare_runtime(models, runtime: str, *, shapes=((1, 128),), decode_tokens: int = 64, threads: int | None = None,
                    repeats: int = 10, warmup: int = 2, decode_repeats: int = 3, precision: str | None = None,
                    exports: list[dict] | None = None, memory: bool = False, progress=None) -> list[dict]:
    """Profile ``models`` on ``runtime`` (onnxruntime, openvino or llamacpp), interleaved, ratios to the first.

    Args:
        models: `slimlm.models.Model` objects; the first is the reference of the ratios.
        runtime: the runtime.
        shapes, decode_tokens, threads, repeats, warmup, decode_repeats: as `slimlm.profile.compare` (decode
            runs interleaved too, after one warm-up round).
        precision: one runtime type for every model; default each model's `runtime_type` (a model the
            runtime cannot take raises `ConfigError`), and on llama.cpp a ``.gguf`` model runs as the file
            it was loaded from (`as_brought`).
        exports: `runtime_export` results, one per model, made by the caller (they stay where they are);
            default: export into a temporary directory removed at the end.
        memory: also measure each export's peak RSS in a fresh process (`slimlm.export.rssprobe`: load, one
            prefill at the largest shape, one decode), after the timings.

    Returns:
        One dict per model: ``model``, ``runtime``, ``format``, ``precision``, ``threads``, ``disk_mb``,
        ``latency_ms`` (per ``BxS``: p50/p90/p99/mean/n), ``decode_tokens_per_s``, ``energy_j_per_1k_tokens``
        and ``co2e_g_per_1k_tokens`` over the timed prefills (``energy_source``: RAPL or the TDP-share
        estimate, as `slimlm.profile`), ``peak_rss_mb`` (None
        without ``memory``) with ``memory_probe`` (the shape, the RSS loaded),
        ``check`` (the export check, when one ran), ``machine`` and ``ratios``.
    """
    from slimlm.profile.core import DEFAULT_THREADS
    from slimlm.profile.energy import EnergyMeter, co2e_grams
    from slimlm.profile.machine import machine_info

    check_runtime(runtime)
    if runtime == "torch":
        raise ConfigError("compare_runtime profiles exported models; use slimlm.profile.compare for torch.")
    progress = or_noop(progress)
    threads = threads or DEFAULT_THREADS
    n_ctx = max(s for _, s in shapes) + decode_tokens + 8
    tmp = None if exports is not None else Path(tempfile.mkdtemp(prefix="slimlm-runtime-"))
    try:
        if exports is None:
            exports = []
            for i, m in enumerate(models):
                progress(f"export for {runtime}", i, len(models))
                brought = as_brought(m) if runtime == "llamacpp" and precision is None else None
                exports.append(brought or runtime_export(m, runtime, tmp / f"m{i}", precision=precision))
            progress(f"export for {runtime}", len(models), len(models))
        sessions, results = [], []
        machine = machine_info()
        for m, res in zip(models, exports, strict=True):
            sessions.append(_Session(runtime, Path(res["main_file"]), threads, n_ctx, m.task))
            results.append({"model": m.spec, "task": m.task, "runtime": runtime, "format": res["format"],
                            "precision": res["precision"], "as_brought": bool(res.get("as_brought")),
                            "inference_precision": sessions[-1].inference_precision, "threads": threads,
                            "disk_mb": sum(res["files"].values()) / 1e6, "check": res.get("check"),
                            "latency_ms": {}, "decode_tokens_per_s": None, "peak_rss_mb": None, "machine": machine})
        g = torch.Generator().manual_seed(0)
        meters, tokens = [EnergyMeter(threads) for _ in models], [0] * len(models)  # as slimlm.profile: prefill
        for b, s in shapes:
            times: list[list[float]] = [[] for _ in models]
            for rep in range(warmup + repeats):
                for i, (m, sess) in enumerate(zip(models, sessions, strict=True)):
                    ids = torch.randint(0, m.adapter.vocab_size, (b, s), generator=g)
                    with meters[i] if rep >= warmup else contextlib.nullcontext():
                        t = time.perf_counter()
                        sess.prefill(ids)
                        dt = time.perf_counter() - t
                    if rep >= warmup:
                        times[i].append(dt)
                        meters[i].add_seconds(dt)
                        tokens[i] += b * s
                progress(f"prefill {b}x{s}", rep + 1, warmup + repeats)
            for i, r in enumerate(results):
                r["latency_ms"][f"{b}x{s}"] = _p(times[i])
        for r, meter, n in zip(results, meters, tokens, strict=True):
            r["energy_j_per_1k_tokens"] = meter.joules / n * 1000 if n else None
            r["co2e_g_per_1k_tokens"] = co2e_grams(r["energy_j_per_1k_tokens"]) if n else None
            r["energy_source"] = meter.source
        if decode_tokens and any(sess.decode for sess in sessions):
            # interleaved like prefill: one warm-up round, then rounds of every model in turn
            rates: list[list[float]] = [[] for _ in models]
            rounds = decode_repeats
            for rep in range(1 + rounds):
                for i, sess in enumerate(sessions):
                    if sess.decode is not None:
                        rate = sess.decode(decode_tokens)
                        if rep:
                            rates[i].append(rate)
                progress("decode", rep + 1, 1 + rounds)
            for i, r in enumerate(rates):
                if r:
                    results[i]["decode_tokens_per_s"] = statistics.median(r)
        if memory:
            big = max(shapes, key=lambda bs: bs[0] * bs[1])
            for i, (m, res, r) in enumerate(zip(models, exports, results, strict=True)):
                progress("memory", i, len(models))
                mem = peak_rss(runtime, res["main_file"], task=m.task, shape=big, threads=threads,
                               decode=decode_tokens if m.task == "causal-lm" else 0, vocab=m.adapter.vocab_size)
                r["peak_rss_mb"] = mem.pop("peak_rss_mb")
                r["memory_probe"] = {"shape": f"{big[0]}x{big[1]}", **mem}
            progress("memory", len(models), len(models))
        ref = results[0]
        for r in results:
            r["ratios"] = {f"prefill_speedup_{k}": ref["latency_ms"][k]["p50"] / v["p50"] for k, v in r["latency_ms"].items()}
            r["ratios"]["disk"] = r["disk_mb"] / ref["disk_mb"]
            if r["decode_tokens_per_s"] and ref["decode_tokens_per_s"]:
                r["ratios"]["decode_speedup"] = r["decode_tokens_per_s"] / ref["decode_tokens_per_s"]
            if r["peak_rss_mb"] and ref["peak_rss_mb"]:
                r["ratios"]["peak_rss"] = r["peak_rss_mb"] / ref["peak_rss_mb"]
            if r["energy_j_per_1k_tokens"] and ref["energy_j_per_1k_tokens"]:
                r["ratios"]["energy"] = r["energy_j_per_1k_tokens"] / ref["energy_j_per_1k_tokens"]
        return results
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
