"""int8 layers on a CPU without int8 dot-product instructions: the fp32 fallback against fp32, side by side.

    .venv/bin/python bench/int8_fallback.py            # SmolLM2-135M, 1 thread, 6 interleaved rounds
    .venv/bin/python bench/int8_fallback.py --quick    # a tiny model, to check the script in a minute

Without VNNI/AMX (x86) or dot-product instructions (Arm), torch's int8 x int8 kernel is tens of times slower
than fp32, so slimlm's int8-dynamic layers sum the same integer products in fp32 there. This benchmark runs
that fallback on any machine (it is chosen per process by a flag, the same one ``SLIMLM_INT8_MATMUL=float``
sets) and compares, in one process and interleaved round by round:

- fp32, the model as loaded;
- int8-dynamic (the default skip: lm_head and embeddings in fp32) and int8-dynamic with lm_head quantized too,
  each with the int8 kernel (where this CPU has a fast one), the fallback as it was (every weight converted
  to fp32 whole per call) and as it is now (`slimlm.models.qlayers.int8_float_matmul`: weights above 32 MB
  in fp32 converted and multiplied in cache-sized blocks of rows, smaller ones whole);
- int8 weight-only, before and now (it converts its weight on every CPU).

Prefill 1x128 (median of the round's repeats) and decode tokens/s (8 prompt tokens + N greedy, KV cache on),
each reported as the median over rounds and as a ratio to fp32 in the same rounds. The integer paths must give
identical logits (checked). Writes bench/results/int8_fallback.json and .md with the machine, the load before
and after, and the targets met or missed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent

TARGETS = [
    # (name, metric key, threshold, "ge" | "le")
    ("fallback now no slower than before (5% noise), decode, every int8 variant", "min_now_vs_before_decode",
     0.95, "ge"),
    ("fallback now no slower than before (5% noise), prefill 1x128, every int8 variant",
     "min_now_vs_before_prefill", 0.95, "ge"),
    ("int8-dynamic + lm_head, fallback: decode >= fp32", "head_fallback_decode_vs_fp32", 1.0, "ge"),
    ("int8-dynamic, fallback: prefill 1x128 within 1.2x of fp32", "fallback_prefill_time_vs_fp32", 1.2, "le"),
]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _whole(x: torch.Tensor, qweight: torch.Tensor, block_bytes=None, whole_max_bytes=None) -> torch.Tensor:
    """The fallback as it was: the whole weight converted to fp32 per call."""
    return F.linear(x, qweight.float())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin:smollm2-135m")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds (each measures every row once)")
    p.add_argument("--repeats", type=int, default=5, help="prefill runs per row and round (median taken)")
    p.add_argument("--decode", type=int, default=32, help="new tokens per decode run")
    p.add_argument("--beside", default="nothing else", help="what else ran on the machine (for the record)")
    p.add_argument("--quick", action="store_true", help="a tiny random model and 2 rounds")
    p.add_argument("--out", default=str(ROOT / "results" / "int8_fallback.json"))
    a = p.parse_args(argv)

    from slimlm._quiet import quiet

    quiet()
    torch.set_num_threads(a.threads)
    from slimlm.models import load, qlayers
    from slimlm.profile import machine_info
    from slimlm.quantize import Int8DynamicConfig, Int8WeightConfig, quantize_

    if a.quick:
        a.model = "tiny:llama?layers=2&hidden=128&heads=4&kv_heads=2&ffn=256"
        a.rounds, a.repeats, a.decode = 2, 2, 8
    load_before, started = os.getloadavg(), time.time()
    machine = machine_info()  # measures which int8 kernel this CPU would pick (before we force either)
    native_fast = qlayers.int8_matmul_is_fast()
    base = load(a.model)
    _log(f"loaded {a.model}; this CPU's int8 kernel is {'fast' if native_fast else 'slow'}")

    def quantized(cfg):
        m = copy.deepcopy(base)
        quantize_(m, cfg)
        return m

    variants = {
        "fp32": base,
        "int8-dynamic": quantized(Int8DynamicConfig()),
        "int8-dynamic + lm_head": quantized(Int8DynamicConfig(skip=("embed",))),
        "int8-weight": quantized(Int8WeightConfig()),
    }
    # rows: (label, variant, int kernel?, blocked fallback?)
    rows = [("fp32", "fp32", None, None)]
    for v in ("int8-dynamic", "int8-dynamic + lm_head"):
        if native_fast:
            rows.append((f"{v}, int8 kernel", v, True, True))
        rows += [(f"{v}, fallback before", v, False, False), (f"{v}, fallback now", v, False, True)]
    rows += [("int8-weight, before", "int8-weight", False, False), ("int8-weight, now", "int8-weight", False, True)]

    real_matmul = qlayers.int8_float_matmul

    def use(fast, blocked) -> None:
        qlayers._INT8_MATMUL["fast"] = bool(fast)
        qlayers.int8_float_matmul = real_matmul if blocked or blocked is None else _whole

    g = torch.Generator().manual_seed(0)
    vocab = base.adapter.vocab_size
    ids = torch.randint(0, vocab, (1, 128), generator=g)
    prompt = torch.randint(0, vocab, (1, 8), generator=g)
    pad = base.tokenizer.pad_token_id if base.tokenizer is not None else None

    identical = {}
    with torch.inference_mode():
        for v in ("int8-dynamic", "int8-dynamic + lm_head"):
            outs = []
            for fast, blocked in ((False, False), (False, True)) + (((True, True),) if native_fast else ()):
                use(fast, blocked)
                outs.append(variants[v].hf(ids[:, :64]).logits)
            identical[v] = all(torch.equal(outs[0], o) for o in outs[1:])

    prefill = {r[0]: [] for r in rows}
    decode = {r[0]: [] for r in rows}
    with torch.inference_mode():
        for rnd in range(a.rounds):
            order = rows if rnd % 2 == 0 else rows[::-1]  # alternate the order so drift does not favour a row
            for label, v, fast, blocked in order:
                use(fast, blocked)
                m = variants[v].hf
                m(ids)  # warm-up
                ts = []
                for _ in range(a.repeats):
                    t = time.perf_counter()
                    m(ids)
                    ts.append(time.perf_counter() - t)
                prefill[label].append(statistics.median(ts) * 1e3)
                t = time.perf_counter()
                m.generate(prompt, max_new_tokens=a.decode, min_new_tokens=a.decode, do_sample=False,
                           pad_token_id=pad)
                decode[label].append(a.decode / (time.perf_counter() - t))
            _log(f"round {rnd + 1}/{a.rounds} done")
    use(native_fast, True)
    qlayers.int8_float_matmul = real_matmul

    def ratio(series_a, series_b):  # per-round ratio a / b, median over rounds
        return statistics.median(x / y for x, y in zip(series_a, series_b, strict=True))

    table = []
    for label, v, fast, blocked in rows:
        table.append({
            "row": label, "variant": v,
            "kernel": "fp32" if fast is None else ("int8" if fast else ("fp32 on integers" if v != "int8-weight"
                                                                         else "fp32")),
            "weight_conversion": None if blocked is None or fast else ("blocks above 32 MB" if blocked else "whole"),
            "prefill_ms": statistics.median(prefill[label]),
            "prefill_speedup_vs_fp32": ratio(prefill["fp32"], prefill[label]),
            "decode_tok_s": statistics.median(decode[label]),
            "decode_vs_fp32": ratio(decode[label], decode["fp32"]),
        })
    by = {r["row"]: r for r in table}
    now_vs_before = {}
    for v in ("int8-dynamic", "int8-dynamic + lm_head", "int8-weight"):
        w, b = (f"{v}, before", f"{v}, now") if v == "int8-weight" else (f"{v}, fallback before",
                                                                         f"{v}, fallback now")
        now_vs_before[v] = {"decode": ratio(decode[b], decode[w]), "prefill": ratio(prefill[w], prefill[b])}
    metrics = {
        "min_now_vs_before_decode": min(x["decode"] for x in now_vs_before.values()),
        "min_now_vs_before_prefill": min(x["prefill"] for x in now_vs_before.values()),
        "head_fallback_decode_vs_fp32": by["int8-dynamic + lm_head, fallback now"]["decode_vs_fp32"],
        "fallback_prefill_time_vs_fp32": 1 / by["int8-dynamic, fallback now"]["prefill_speedup_vs_fp32"],
    }
    targets = []
    for name, key, thr, how in TARGETS:
        val = metrics[key]
        met = val >= thr if how == "ge" else val <= thr
        targets.append({"target": name, "value": val, "threshold": thr, "met": bool(met)})
    result = {
        "model": a.model, "threads": a.threads, "rounds": a.rounds, "repeats": a.repeats, "decode_tokens": a.decode,
        "machine": machine, "native_int8_kernel_fast": native_fast, "load_before": list(load_before),
        "load_after": list(os.getloadavg()), "beside": a.beside, "wall_s": time.time() - started,
        "logits_identical_across_int8_dynamic_kernels": identical, "rows": table,
        "now_vs_before": now_vs_before, "metrics": metrics, "targets": targets, "quick": a.quick,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = Path(a.out)
    if a.quick and a.out == p.get_default("out"):
        out = out.with_name("int8_fallback-quick.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    md = _markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0 if all(t["met"] for t in targets) and all(identical.values()) else 1


def _markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"# int8 layers without a fast int8 kernel: the fp32 fallback beside fp32 ({r['model']})",
        "",
        f"Run {r['date']}. Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; int8 instructions: "
        f"{', '.join(m['int8_gemm'].get('instructions') or []) or 'none'}; this CPU's own int8 kernel is {'fast' if r['native_int8_kernel_fast'] else 'slow'}. "
        f"{r['threads']} thread(s); {r['rounds']} interleaved rounds (order reversed every other round); prefill "
        f"1x128, median of {r['repeats']} per round; decode 8 prompt tokens + {r['decode_tokens']} greedy. "
        f"Load average before {r['load_before'][0]:.2f}, after {r['load_after'][0]:.2f}; wall "
        f"{r['wall_s'] / 60:.1f} min. What ran beside: {r['beside']}.",
        "",
        *(["The fallback rows were forced on a CPU that has a fast int8 kernel (the flag `SLIMLM_INT8_MATMUL=float` "
           "sets): they show what the fallback costs against fp32 on this CPU's fp32 kernels. A CPU without int8 "
           "dot-product instructions often has narrower vector units too (AVX2 rather than AVX-512), so run it "
           "there for that CPU's own figures.", ""] if r["native_int8_kernel_fast"] else []),
        "| row | kernel | weight converted | prefill 1x128 ms | speed-up vs fp32 | decode tok/s | vs fp32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        lines.append(f"| {x['row']} | {x['kernel']} | {x['weight_conversion'] or '-'} | {x['prefill_ms']:.1f} | "
                     f"{x['prefill_speedup_vs_fp32']:.2f}x | {x['decode_tok_s']:.1f} | {x['decode_vs_fp32']:.2f}x |")
    lines += ["", "The fallback now against before (per-round speed ratios, median): "
              + "; ".join(f"{v}: decode {x['decode']:.2f}x, prefill {x['prefill']:.2f}x"
                          for v, x in r["now_vs_before"].items()) + ".",
              "", "int8-dynamic logits identical across the kernels (64 tokens): "
              + ", ".join(f"{v}: {'yes' if ok else 'NO'}" for v, ok in
                          r["logits_identical_across_int8_dynamic_kernels"].items()) + ".", "", "Targets:", ""]
    for t in r["targets"]:
        lines.append(f"- {'met' if t['met'] else 'MISSED'}: {t['target']}: {t['value']:.2f} (threshold {t['threshold']})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
