"""`slimlm profile --runtime`: the profile protocol on a deployment runtime: ONNX Runtime, OpenVINO, llama.cpp (or torch, the default).

Each model is exported with `slimlm.export` (no check: profiling measures speed, the check is the export
command's job) into a temporary directory, loaded into the runtime with the same fixed thread count, and
timed like `slimlm.profile.compare` does on torch: warm-up runs, then repeated prefill timings per
``BxS`` shape, interleaved model by model, with ratios against the first model on the same runtime.

Decode tokens/s: llama.cpp decodes with its KV cache (one token per call after the prompt). The ONNX and
OpenVINO graphs slimlm writes are prefill graphs without a KV cache, so their decode is not measured (None)
rather than reported from re-running the whole prefix. Disk is the exported file(s); peak RSS is not
measured on these runtimes yet.
"""

from __future__ import annotations

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
            "llamacpp": ("gguf", "f16", "llama_cpp")}


def _p(times: list[float]) -> dict:
    ms = sorted(t * 1000 for t in times)
    k = lambda q: ms[min(int(round((len(ms) - 1) * q)), len(ms) - 1)]  # noqa: E731
    return {"p50": statistics.median(ms), "p90": k(0.9), "p99": k(0.99), "mean": statistics.fmean(ms), "n": len(ms)}


class _Session:
    """One exported model loaded in a runtime: ``prefill(ids)`` and optionally ``decode(n)``."""

    def __init__(self, runtime: str, path: Path, threads: int, n_ctx: int):
        self.runtime, self.decode = runtime, None
        if runtime == "onnxruntime":
            from slimlm.export.onnx import onnx_logits_fn

            self.prefill = onnx_logits_fn(path, threads)
        elif runtime == "openvino":
            from slimlm.export.openvino import openvino_logits_fn

            self.prefill = openvino_logits_fn(path, threads)
        else:  # llama.cpp through llama-cpp-python
            from llama_cpp import Llama

            llm = Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=n_ctx,
                        n_batch=n_ctx, logits_all=False, verbose=False)

            def prefill(ids: torch.Tensor):
                for row in ids.tolist():  # llama.cpp evaluates one sequence at a time
                    llm.reset()
                    llm.eval(row)

            def decode(n: int) -> float:
                llm.reset()
                llm.eval([llm.token_bos() if llm.token_bos() >= 0 else 0])
                t = time.perf_counter()
                for _ in range(n):
                    llm.eval([int(llm.sample(temp=0.0))])
                return n / (time.perf_counter() - t)

            self.prefill, self.decode = prefill, decode


def compare_runtime(models, runtime: str, *, shapes=((1, 128),), decode_tokens: int = 64, threads: int | None = None,
                    repeats: int = 10, warmup: int = 2, precision: str | None = None, progress=None) -> list[dict]:
    """Profile ``models`` on ``runtime`` (onnxruntime, openvino or llamacpp), interleaved, ratios to the first.

    Returns:
        One dict per model: ``model``, ``runtime``, ``format``, ``precision``, ``threads``, ``disk_mb``,
        ``latency_ms`` (per ``BxS``: p50/p90/p99/mean/n), ``decode_tokens_per_s`` (llama.cpp only) and ``ratios``.
    """
    from slimlm.export import export
    from slimlm.profile.core import DEFAULT_THREADS
    from slimlm.profile.machine import machine_info

    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; use torch, {', '.join(RUNTIMES)}.")
    fmt, default, module = RUNTIMES[runtime]
    if importlib.util.find_spec(module) is None:
        hint = ("pip install llama-cpp-python (builds llama.cpp from source, about 20 minutes)" if runtime == "llamacpp"
                else "pip install 'slimlm[export]'")
        raise ConfigError(f"--runtime {runtime} needs the {module} package; {hint}.")
    progress = or_noop(progress)
    threads = threads or DEFAULT_THREADS
    n_ctx = max(s for _, s in shapes) + decode_tokens + 8
    tmp = Path(tempfile.mkdtemp(prefix="slimlm-runtime-"))
    try:
        sessions, results = [], []
        for i, m in enumerate(models):
            progress(f"export for {runtime}", i, len(models))
            res = export(m, fmt, tmp / f"m{i}", precision=precision or default, check=False)
            sessions.append(_Session(runtime, Path(res["main_file"]), threads, n_ctx))
            results.append({"model": m.spec, "runtime": runtime, "format": fmt, "precision": res["precision"],
                            "threads": threads, "disk_mb": sum(res["files"].values()) / 1e6,
                            "latency_ms": {}, "decode_tokens_per_s": None, "machine": machine_info()})
        progress(f"export for {runtime}", len(models), len(models))
        g = torch.Generator().manual_seed(0)
        for b, s in shapes:
            times: list[list[float]] = [[] for _ in models]
            for rep in range(warmup + repeats):
                for i, (m, sess) in enumerate(zip(models, sessions, strict=True)):
                    ids = torch.randint(0, m.adapter.vocab_size, (b, s), generator=g)
                    t = time.perf_counter()
                    sess.prefill(ids)
                    if rep >= warmup:
                        times[i].append(time.perf_counter() - t)
                progress(f"prefill {b}x{s}", rep + 1, warmup + repeats)
            for i, r in enumerate(results):
                r["latency_ms"][f"{b}x{s}"] = _p(times[i])
        if decode_tokens:
            for i, sess in enumerate(sessions):
                if sess.decode is not None:
                    results[i]["decode_tokens_per_s"] = statistics.median(sess.decode(decode_tokens) for _ in range(3))
        ref = results[0]
        for r in results:
            r["ratios"] = {f"prefill_speedup_{k}": ref["latency_ms"][k]["p50"] / v["p50"] for k, v in r["latency_ms"].items()}
            r["ratios"]["disk"] = r["disk_mb"] / ref["disk_mb"]
            if r["decode_tokens_per_s"] and ref["decode_tokens_per_s"]:
                r["ratios"]["decode_speedup"] = r["decode_tokens_per_s"] / ref["decode_tokens_per_s"]
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
