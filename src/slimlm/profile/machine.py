"""The machine: a description for every result file, and its own measured roofline (cached).

The roofline is measured, not looked up: fp32 matmul GFLOP/s (2048³, best of a few runs) and memory
bandwidth (a 256 MiB copy, bytes read + written). It is cached per CPU model, thread count and torch version
in the slimlm cache, because it takes ~10 s and the numbers change little between runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time

import torch

from slimlm._io import cache_dir, write_json_atomic


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def machine_info() -> dict:
    """A short, JSON-ready description of this machine and the software that measured on it."""
    import transformers

    from slimlm.models.qlayers import int8_matmul_is_fast
    from slimlm.profile.cpu import int8_gemm_support

    mem_gb = None
    try:
        import psutil

        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover
        pass
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "memory_gb": mem_gb,
        "accelerator": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "int8_gemm": int8_gemm_support(),  # VNNI/AMX (x86) or dot-product/i8mm (Arm): see slimlm.profile.cpu
        # what int8-dynamic layers multiply with on this CPU, as measured (torch's int8 kernel, or fp32 on integers)
        "int8_matmul": "int8" if int8_matmul_is_fast() else "fp32",
    }


def _best(fn, runs: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure_roofline(threads: int | None = None, n: int = 2048, copy_mib: int = 256) -> dict:
    """Measure peak fp32 matmul GFLOP/s and copy bandwidth GB/s with ``threads`` threads."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        mm = _best(lambda: torch.mm(a, b), 3)
        src = torch.empty(copy_mib * 2**20 // 4).uniform_()
        dst = torch.empty_like(src)
        cp = _best(lambda: dst.copy_(src), 5)
        return {
            "peak_gflops": 2 * n**3 / mm / 1e9,
            "peak_gb_s": 2 * src.numel() * 4 / cp / 1e9,
            "threads": torch.get_num_threads(),
            "method": f"fp32 matmul {n}^3 best of 3; {copy_mib} MiB copy best of 5 (read+write bytes)",
        }
    finally:
        torch.set_num_threads(old)


def roofline(threads: int | None = None, refresh: bool = False) -> dict:
    """The cached roofline for this machine and thread count (measured on first use).

    The machine may be shared, so a measurement can come out low; ``refresh=True`` measures again and
    keeps the higher of the two, and `compare` refreshes by itself when a model appears to beat the peak.
    """
    threads = threads or torch.get_num_threads()
    key = f"{cpu_model()}|{threads}|{torch.__version__}"
    path = cache_dir("machine") / f"roofline-{hashlib.sha1(key.encode()).hexdigest()[:12]}.json"
    old = None
    if path.exists():
        try:
            old = json.loads(path.read_text())
            if old.get("key") != key:
                old = None
        except json.JSONDecodeError:
            old = None
    if old is not None and not refresh:
        return old
    data = {**measure_roofline(threads), "key": key, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if old is not None:  # a peak is a maximum: a re-measurement on a busy machine must not lower it
        data["peak_gflops"] = max(data["peak_gflops"], old["peak_gflops"])
        data["peak_gb_s"] = max(data["peak_gb_s"], old["peak_gb_s"])
    write_json_atomic(path, data)
    return data
