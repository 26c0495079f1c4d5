"""Efficiency profile of one or several models: size, memory, latency, decode speed, FLOPs, roofline, energy.

Protocol: ``torch.inference_mode``, a fixed thread count (recorded), warm-up runs, then
repeated timings reported as p50/p90/p99 with their spread. `compare` interleaves the models run by run in
one process, so that the machine's drift (other tenants, thermal state) hits every variant alike, and reports
ratios against the first model. Peak RSS is measured per model in a fresh subprocess (see `memprobe`).
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import torch

from slimlm._io import scratch_dir
from slimlm._progress import or_noop
from slimlm.errors import ConfigError
from slimlm.models import META_FILE, Model, save
from slimlm.profile.energy import EnergyMeter, co2e_grams, grid_intensity
from slimlm.profile.flops import decode_bytes_per_token, prefill_flops
from slimlm.profile.machine import machine_info, roofline

DEFAULT_SHAPES = ((1, 128), (8, 128))
#: threads when none are given: fixed and recorded, so a figure does not depend on how busy the machine was
#: (on a shared 2-vCPU machine a second OpenMP thread waits on the neighbours; one thread is the stable choice)
DEFAULT_THREADS = 1


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """``"1x128,8x128"`` -> ((1, 128), (8, 128)); fails with the expected form."""
    shapes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            b, s = (int(x) for x in part.lower().split("x"))
            if b < 1 or s < 1:
                raise ValueError
        except ValueError:
            raise ConfigError(f"--shapes: {part!r} is not BxS with positive integers (e.g. 1x128,8x128).") from None
        shapes.append((b, s))
    if not shapes:
        raise ConfigError("--shapes is empty; give BxS shapes such as 1x128,8x128.")
    return tuple(shapes)


def _percentiles(times_s: list[float]) -> dict:
    ms = sorted(t * 1000 for t in times_s)

    def pct(q: float) -> float:  # linear interpolation between closest ranks
        k = (len(ms) - 1) * q
        lo, hi = int(k), min(int(k) + 1, len(ms) - 1)
        return ms[lo] + (ms[hi] - ms[lo]) * (k - lo)

    return {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "mean": statistics.fmean(ms),
            "std": statistics.pstdev(ms), "n": len(ms)}


def _own_dir(model: Model) -> Path | None:
    """The directory the model was loaded from, when it holds exactly these weights."""
    if model.path is not None and (model.path / META_FILE).exists():
        meta = json.loads((model.path / META_FILE).read_text())
        if meta.get("hash") and meta["hash"] == model.hash:
            return model.path
    if model.path is not None and model.path.is_dir() and not model.provenance.get("stages") and \
            model.provenance.get("spec", "").startswith("builtin:"):
        return model.path
    return None


def _disk_dir(model: Model) -> tuple[Path, bool]:
    """A directory holding exactly these weights: the model's own, or a temporary save (True)."""
    if (own := _own_dir(model)) is not None:
        return own, False
    # in the user cache, under a name the next scratch_dir sweeps once this process is gone (a SIGKILLed run's
    # hundreds of MB do not pile up in /tmp)
    holder = scratch_dir("tmp", "profile")
    tmp = holder / "model"
    save(model, tmp)
    return tmp, True


def dir_mb(path: Path) -> float:
    """Total size of the files under ``path`` in MiB."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def disk_mb(model: Model) -> float:
    """Size on disk of the model's saved form (saved to a temporary directory if it has none)."""
    path, temp = _disk_dir(model)
    try:
        return dir_mb(path)
    finally:
        if temp:
            shutil.rmtree(path.parent, ignore_errors=True)


def _peak_rss(path: Path, shape: tuple[int, int], decode: int, threads: int) -> dict:
    from slimlm.profile.memprobe import run_probe

    return run_probe("slimlm.profile.memprobe", [str(path), "--shape", f"{shape[0]}x{shape[1]}", "--decode",
                                                 str(decode), "--threads", str(threads)])


def _nonzero(model: Model) -> int:
    seen, nz = set(), 0
    for p in model.hf.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        nz += int(torch.count_nonzero(p.detach()).item()) if type(p) in (torch.Tensor, torch.nn.Parameter) \
            else p.numel()
    # slimlm.quantize layers hold their weights in buffers (as `Model.num_params` counts them)
    return nz + sum(m.nonzero_params() for m in model.hf.modules() if hasattr(m, "nonzero_params"))


def _inputs(model: Model, b: int, s: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(b * 100_003 + s)
    return torch.randint(0, model.adapter.vocab_size, (b, s), generator=g)


def _forward(model: Model, ids: torch.Tensor) -> None:
    kw = {"use_cache": False} if model.task == "causal-lm" else {}
    fn = getattr(model, "runner", None)  # a compiled callable, if a stage attached one
    if fn is None:  # not `or`: a torch.compile module has no truth value (its __len__ raises)
        fn = model.hf
    fn(ids, **kw)


def _decode_once(model: Model, n: int) -> float:
    ids = _inputs(model, 1, 8)
    t = time.perf_counter()
    model.hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                      pad_token_id=model.tokenizer.pad_token_id)
    return n / (time.perf_counter() - t)


@torch.inference_mode()
def compare(
    models: list[Model],
    *,
    shapes=DEFAULT_SHAPES,
    decode_tokens: int = 64,
    threads: int | None = None,
    repeats: int = 10,
    warmup: int = 2,
    decode_repeats: int = 3,
    memory: bool = True,
    progress=None,
) -> list[dict]:
    """Profile several models in one process, interleaved, with ratios against the first.

    Args:
        models: the models; the first is the reference for ``ratios``.
        shapes: prefill shapes ``(batch, seq)``.
        decode_tokens: new tokens per decode run (batch 1, KV cache on); 0 skips decode.
        threads: torch threads (default `DEFAULT_THREADS`, 1; recorded in every result).
        repeats: timed prefill runs per model and shape, after ``warmup`` untimed ones.
        memory: measure peak RSS per model in a fresh subprocess.
        progress: optional ``progress(desc, done, total)``.

    Returns:
        One dict per model with the keys of the README's ``profile --json`` plus ``flops`` and ``ratios``.
    """
    progress = or_noop(progress)
    threads = threads or DEFAULT_THREADS
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        roof = roofline(threads)
        for m in models:
            limit = m.adapter.max_positions
            for b, s in shapes:
                if limit and s > limit:
                    raise ConfigError(f"shape {b}x{s} exceeds {m.spec}'s maximum of {limit} positions.")
        results = [_static(m) for m in models]
        if memory:
            big = max(shapes, key=lambda bs: bs[0] * bs[1])
            for i, (m, r) in enumerate(zip(models, results, strict=True)):
                progress("memory", i, len(models))
                path, temp = _disk_dir(m)
                r["disk_mb"] = dir_mb(path)
                mem = _peak_rss(path, big, decode_tokens if m.task == "causal-lm" else 0, threads)
                r["peak_rss_mb"] = mem.get("peak_rss_mb")
                r["memory_probe"] = {"shape": f"{big[0]}x{big[1]}", **{k: v for k, v in mem.items() if k != "peak_rss_mb"}}
                if temp:
                    shutil.rmtree(path.parent, ignore_errors=True)
            progress("memory", len(models), len(models))
        else:  # no probe, so no save: the size on disk of a model that has its own directory (a saved variant)
            for m, r in zip(models, results, strict=True):
                if (own := _own_dir(m)) is not None:
                    r["disk_mb"] = dir_mb(own)
        meters = [EnergyMeter(threads) for _ in models]
        total = len(shapes) * (warmup + repeats) * len(models)
        done = 0
        for b, s in shapes:
            key = f"{b}x{s}"
            times: list[list[float]] = [[] for _ in models]
            for rep in range(warmup + repeats):
                for i, m in enumerate(models):
                    ids = _inputs(m, b, s)
                    with meters[i] if rep >= warmup else _Null():
                        t = time.perf_counter()
                        _forward(m, ids)
                        dt = time.perf_counter() - t
                    if rep >= warmup:
                        times[i].append(dt)
                        meters[i].add_seconds(dt)
                    done += 1
                    progress("prefill", done, total)
            for i, m in enumerate(models):
                lat = _percentiles(times[i])
                results[i]["latency_ms"][key] = lat
                fl = prefill_flops(m, b, s)
                results[i]["flops"][key] = fl
                results[i]["roofline"]["prefill_share"][key] = fl / (lat["p50"] / 1000) / (roof["peak_gflops"] * 1e9)
                results[i]["_tokens"] += b * s * len(times[i])
        if decode_tokens:
            rates: list[list[float]] = [[] for _ in models]
            causal = [m.task == "causal-lm" for m in models]
            for rep in range(decode_repeats + 1):
                for i, m in enumerate(models):
                    if causal[i]:
                        rate = _decode_once(m, decode_tokens)
                        if rep > 0:  # first run is the warm-up
                            rates[i].append(rate)
                progress("decode", rep + 1, decode_repeats + 1)
            for i, m in enumerate(models):
                if causal[i]:
                    tps = statistics.median(rates[i])
                    results[i]["decode_tokens_per_s"] = tps
                    per_tok = decode_bytes_per_token(m, 8 + decode_tokens // 2)
                    results[i]["roofline"]["decode_share"] = per_tok * tps / (roof["peak_gb_s"] * 1e9)
                    results[i]["roofline"]["decode_bytes_per_token"] = per_tok
        for i, r in enumerate(results):
            tokens = r.pop("_tokens")
            j = meters[i].joules
            r["energy_j_per_1k_tokens"] = j / tokens * 1000 if tokens else None
            r["co2e_g_per_1k_tokens"] = co2e_grams(r["energy_j_per_1k_tokens"]) if tokens else None
            r["energy_source"] = meters[i].source
            r["grid_gco2_per_kwh"] = grid_intensity()
            r["roofline"].update({"peak_gflops": roof["peak_gflops"], "peak_gb_s": roof["peak_gb_s"]})
            r["threads"] = threads
            r["machine"] = machine_info()
        _ratios(results)
        if any(v > 1.0 for r in results for v in r["roofline"]["prefill_share"].values()):
            # measured throughput beat the cached peak: the cache was measured on a busy machine
            fresh = roofline(threads, refresh=True)
            for r in results:
                rf = r["roofline"]
                scale = rf["peak_gflops"] / fresh["peak_gflops"]
                rf["prefill_share"] = {k: v * scale for k, v in rf["prefill_share"].items()}
                if rf.get("decode_share") is not None:
                    rf["decode_share"] *= rf["peak_gb_s"] / fresh["peak_gb_s"]
                rf.update({"peak_gflops": fresh["peak_gflops"], "peak_gb_s": fresh["peak_gb_s"]})
        return results
    finally:
        torch.set_num_threads(old_threads)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _source_file(m: Model) -> dict:
    """The file the user brought (a GGUF is often 4x smaller than its fp32 re-save), beside ``disk_mb``."""
    src = m.provenance.get("source_file")
    if not src or not Path(src).is_file() or m.provenance.get("stages"):
        return {}
    return {"source_file": str(src), "source_file_mb": Path(src).stat().st_size / 1e6}


def _static(m: Model) -> dict:
    return {
        **_source_file(m),
        "model": m.spec, "params": m.num_params(), "nonzero_params": _nonzero(m), "disk_mb": None,
        "peak_rss_mb": None, "latency_ms": {}, "decode_tokens_per_s": None, "flops": {},
        "roofline": {"prefill_share": {}, "decode_share": None}, "_tokens": 0,
    }


def _ratios(results: list[dict]) -> None:
    ref = results[0]
    for r in results:
        ratios = {"params": r["params"] / ref["params"]}
        if r.get("disk_mb") and ref.get("disk_mb"):
            ratios["disk"] = r["disk_mb"] / ref["disk_mb"]
        if r.get("disk_mb") and ref.get("source_file_mb"):  # against the file the user brought
            ratios["disk_vs_source_file"] = r["disk_mb"] / ref["source_file_mb"]
        for key, lat in r["latency_ms"].items():
            ratios[f"prefill_speedup_{key}"] = ref["latency_ms"][key]["p50"] / lat["p50"]
            ratios[f"flops_{key}"] = r["flops"][key] / ref["flops"][key]
        if r.get("energy_j_per_1k_tokens") and ref.get("energy_j_per_1k_tokens"):
            ratios["energy"] = r["energy_j_per_1k_tokens"] / ref["energy_j_per_1k_tokens"]
        if r.get("decode_tokens_per_s") and ref.get("decode_tokens_per_s"):
            ratios["decode_speedup"] = r["decode_tokens_per_s"] / ref["decode_tokens_per_s"]
        r["ratios"] = ratios


def profile(model: Model, **kwargs) -> dict:
    """Profile one model; same keyword arguments as `compare`. The keys are listed in the README (``profile --json``)."""
    res = compare([model], **kwargs)[0]
    res.pop("ratios", None)
    return res
