"""Benchmark: two llama.cpp builds side by side, in one process, on the same GGUF files: xllamacpp's portable
wheel (AVX2 kernels) against llama.cpp compiled for this CPU (``make llamacpp-native``), or any builds you name.

Why one process: on a shared machine, separate runs of the same file move by 20% and more (a busier host
slows every row, f16 included), so a build comparison across runs says little. Here each file is loaded in
every build at once and the rounds alternate between builds, in alternating order; the table gives each
build's median and the median of the per-round ratios, with their range.

Protocol per file (one thread by default, as bench/runtimes.py): decode is 8 prompt tokens then 64 greedy
tokens with the KV cache, tokens/s; prefill is one 1x128 batch, ms. 8 rounds after one warm-up round.
Models: the teacher (builtin:smollm2-135m) and any ``--variant NAME=DIR``, exported once per type (``--types``,
default q8_0,q4_0; Q4_0 with the importance matrix, as the runtimes benchmark) with the default build.

No target: this is evidence for a choice (which build to deploy and to measure with), written to
bench/results/llamacpp-builds.json/.md with the machine and the load.

Usage: python bench/llamacpp_builds.py [--lib portable=xllamacpp --lib native=build/llamacpp-native/bin/libllama.so]
                                      [--variant NAME=DIR ...] [--types q8_0,q4_0] [--rounds 8] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NATIVE = ROOT / "build" / "llamacpp-native" / "bin" / "libllama.so"
QUICK_TEACHER = "tiny:llama?merges=1&layers=4&hidden=256&ffn=512"


def library(spec: str) -> str:
    """A ``--lib`` value's path: ``xllamacpp`` is the wheel's own module."""
    if spec == "xllamacpp":
        import xllamacpp

        return xllamacpp.xllamacpp.__file__
    return str(Path(spec).absolute())


def measure(llm, decode_tokens: int) -> tuple[float, float]:
    """(decode tokens/s, prefill 1x128 ms) once, as slimlm's runtime profiling does."""
    llm.reset()
    last = llm.eval(list(range(10, 18)))
    t = time.perf_counter()
    for _ in range(decode_tokens):
        last = llm.eval([int(last.argmax())])
    tps = decode_tokens / (time.perf_counter() - t)
    llm.reset()
    t = time.perf_counter()
    llm.eval(list(range(10, 138)))
    return tps, (time.perf_counter() - t) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", action="append", default=[], metavar="NAME=PATH",
                    help="a llama.cpp build: its libllama.so, or 'xllamacpp' (repeatable; default the wheel and "
                         "build/llamacpp-native)")
    ap.add_argument("--variant", action="append", default=[], help="NAME=DIR of a variant to include (repeatable)")
    ap.add_argument("--types", default="q8_0,q4_0")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a tiny random model, 2 rounds: a smoke run")
    ap.add_argument("--note", default="", help="a line for the results (e.g. what else ran on the machine)")
    a = ap.parse_args()
    libs = [x.split("=", 1) for x in a.lib] or [["portable", "xllamacpp"], ["native", str(NATIVE)]]
    if any(len(x) != 2 for x in libs) or len(libs) < 2:
        print("error: give at least two --lib NAME=PATH (PATH: a libllama.so, or xllamacpp)", file=sys.stderr)
        return 2
    for name, spec in libs:
        if spec != "xllamacpp" and not Path(spec).is_file():
            hint = " (make llamacpp-native builds it)" if Path(spec).absolute() == NATIVE else ""
            print(f"error: --lib {name}={spec}: no such file{hint}", file=sys.stderr)
            return 2

    from slimlm._quiet import quiet

    quiet()
    import torch

    torch.set_num_threads(a.threads)
    from slimlm.export import llamacpp
    from slimlm.export.runtimes import runtime_export
    from slimlm.models import load
    from slimlm.profile import machine_info

    rounds = 2 if a.quick else a.rounds
    decode = 8 if a.quick else a.decode_tokens
    builds = {name: library(spec) for name, spec in libs}
    info = {}
    for name, spec in libs:
        api = llamacpp.build(builds[name])
        info[name] = {"library": spec.replace(f"{ROOT}/", ""), "kernels": api.ffi.string(api.lib.llama_print_system_info()).decode().strip()}
    named = [("teacher", load(QUICK_TEACHER if a.quick else "builtin:smollm2-135m"))]
    for v in a.variant:
        name, _, path = v.rpartition("=")
        named.append((name or Path(path).name, load(path)))
    load_before, t0 = os.getloadavg(), time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="slimlm-bench-builds-") as tmp:
        for kind in a.types.split(","):
            for i, (name, m) in enumerate(named):
                path = runtime_export(m, "llamacpp", Path(tmp) / f"{kind}-{i}", precision=kind)["main_file"]
                llms = {b: llamacpp.LlamaCpp(path, threads=a.threads, n_ctx=256, library=lib) for b, lib in builds.items()}
                got: dict[str, list[tuple[float, float]]] = {b: [] for b in llms}
                for b in llms:
                    measure(llms[b], min(decode, 16))  # warm-up
                for r in range(rounds):
                    for b in (list(llms) if r % 2 == 0 else list(llms)[::-1]):
                        got[b].append(measure(llms[b], decode))
                for llm in llms.values():
                    llm.close()
                ref = next(iter(got))
                row = {"model": name, "type": kind, "disk_mb": Path(path).stat().st_size / 1e6, "builds": {}}
                for b, xs in got.items():
                    dec = [x[0] / y[0] for x, y in zip(xs, got[ref], strict=True)]
                    pre = [y[1] / x[1] for x, y in zip(xs, got[ref], strict=True)]
                    row["builds"][b] = {"decode_tok_s": statistics.median(x[0] for x in xs),
                                        "prefill_ms": statistics.median(x[1] for x in xs),
                                        "decode_x": statistics.median(dec), "decode_x_range": [min(dec), max(dec)],
                                        "prefill_x": statistics.median(pre), "prefill_x_range": [min(pre), max(pre)]}
                rows.append(row)
                print(line(row), flush=True)
    result = {"machine": machine_info(), "threads": a.threads, "rounds": rounds, "decode_tokens": decode,
              "load_before": load_before, "load_after": os.getloadavg(), "wall_s": time.perf_counter() - t0,
              "builds": info, "rows": rows, "note": a.note}
    name = "llamacpp-builds-quick" if a.quick else "llamacpp-builds"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(text := report(result))
    print(text)
    return 0


def line(row: dict) -> str:
    return f"{row['model']} {row['type']}: " + "; ".join(
        f"{b} {x['decode_tok_s']:.1f} tok/s x{x['decode_x']:.2f}, {x['prefill_ms']:.0f} ms x{x['prefill_x']:.2f}"
        for b, x in row["builds"].items())


def report(res: dict) -> str:
    """The Markdown results."""
    names = list(res["builds"])
    ref = names[0]
    mach = res["machine"]
    out = ["# llama.cpp builds side by side (one process, interleaved rounds)", "",
           f"Machine: {mach.get('cpu')}, {mach.get('cores')} cores; {res['threads']} thread(s); {res['rounds']} "
           f"rounds alternating between builds; decode: 8 prompt tokens + {res['decode_tokens']} greedy; prefill: "
           f"1x128; load average before {res['load_before'][0]:.2f}, after {res['load_after'][0]:.2f}; wall "
           f"{res['wall_s'] / 60:.1f} min.", ""]
    out += [f"- **{b}**: `{x['library']}`; kernels `{x['kernels']}`" for b, x in res["builds"].items()]
    head = " | ".join(f"{b} decode tok/s | {b} prefill ms" for b in names)
    ratios = " | ".join(f"{b} vs {ref}: decode (range) | prefill speed-up (range)" for b in names[1:])
    out += ["", f"| model | type | disk MB | {head} | {ratios} |",
            "|---|---|---|" + "---|" * (2 * len(names) + 2 * (len(names) - 1))]
    for r in res["rows"]:
        cells = [f"{r['builds'][b]['decode_tok_s']:.1f} | {r['builds'][b]['prefill_ms']:.0f}" for b in names]
        rx = [f"{x['decode_x']:.2f}x ({x['decode_x_range'][0]:.2f}-{x['decode_x_range'][1]:.2f}) | "
              f"{x['prefill_x']:.2f}x ({x['prefill_x_range'][0]:.2f}-{x['prefill_x_range'][1]:.2f})"
              for x in (r["builds"][b] for b in names[1:])]
        out.append(f"| {r['model']} | {r['type']} | {r['disk_mb']:.1f} | {' | '.join(cells)} | {' | '.join(rx)} |")
    if res.get("note"):
        out += ["", res["note"]]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
