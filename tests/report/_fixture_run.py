"""A realistic run directory (SmolLM2-135M on 2 CPU cores, the numbers' shape taken from real profiles) for the
report tests and the README screenshot: `python tests/report/_fixture_run.py OUT_DIR` writes one."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

BASE_PPL, BASE_OOD = 38.2, 22.5
SHAPES = {"1x128": 128, "8x128": 1024}
WATTS = 4.4 * 2  # estimated: TDP share per core × 2 threads


def _variant(vid, label, stages, *, ppl, ood, params, disk, rss, p50, decode, parent="a0b1c2d3",
             baseline=False, recovery=None, curves=None, nonzero=None, top1=0.9, kl=0.1, ece=0.03,
             prefill_share=0.4, decode_share=0.3, profiled=True):
    lat = {"1x128": {"p50": p50, "p90": p50 * 1.08, "p99": p50 * 1.2},
           "8x128": {"p50": p50 * 6.6, "p90": p50 * 6.9, "p99": p50 * 7.4}}
    secs = sum(v["p50"] / 1000 for v in lat.values())
    e1k = WATTS * secs / sum(SHAPES.values()) * 1000
    m = {"perplexity": ppl, "ood_perplexity": ood, "ece": ece, "teacher_top1": top1, "teacher_kl": kl,
         "accuracy": None, "f1": None, "quality_drop": ppl / BASE_PPL - 1, "ood_quality_drop": ood / BASE_OOD - 1,
         "params": params, "nonzero_params": nonzero or params, "disk_mb": disk, "peak_rss_mb": rss,
         "latency_ms": lat, "latency_p50_ms": p50, "latency_p99_ms": p50 * 1.2, "decode_tokens_per_s": decode,
         "energy_j_per_1k_tokens": e1k, "co2e_g_per_1k_tokens": e1k / 3.6e6 * 475,
         "energy_source": "estimated (TDP share)",
         "roofline": {"prefill_share": {"1x128": prefill_share, "8x128": prefill_share * 1.3}, "decode_share": decode_share}}
    if not profiled:  # a failed profile: quality known, efficiency unknown
        for k in ("latency_ms", "latency_p50_ms", "latency_p99_ms", "decode_tokens_per_s", "energy_j_per_1k_tokens",
                  "co2e_g_per_1k_tokens", "peak_rss_mb", "roofline"):
            m[k] = None
    return {"id": vid, "label": label, "parent": None if baseline else parent, "is_baseline": baseline,
            "stages": stages, "path": f"cache/{vid}", "metrics": m, "recovery": recovery or {},
            "curves": curves or {}, "seconds": 0.0 if baseline else 60.0 + (recovery or {}).get("seconds", 0)}


def _curve(start, end, steps):
    xs = list(range(0, steps + 1, 50))
    return {"step": xs, "eval_perplexity": [end + (start - end) * math.exp(-x / (steps / 4)) for x in xs]}


Q8 = {"kind": "quantize", "config": {"scheme": "int8-dynamic"}}


def variants() -> list[dict]:
    prune6 = {"kind": "prune", "config": {"method": "structured", "layers": 6}}
    ffn = {"kind": "prune", "config": {"method": "structured", "ffn": 0.25}}
    d = lambda n: {"kind": "distill", "config": {"steps": n, "loss": "forward_kl"}}  # noqa: E731
    return [
        _variant("a0b1c2d3", "baseline", [], ppl=BASE_PPL, ood=BASE_OOD, params=134_515_008, disk=538.1, rss=910.0,
                 p50=92.0, decode=24.5, baseline=True, top1=1.0, kl=0.0, ece=0.021, prefill_share=0.42, decode_share=0.31),
        _variant("5e21a9f0", "int8-dynamic", [Q8], ppl=38.9, ood=23.15, params=134_515_008, disk=190.4, rss=520.0,
                 p50=61.0, decode=38.2, top1=0.962, kl=0.031, prefill_share=0.63, decode_share=0.22),
        _variant("77c0de11", "int8-weight", [{"kind": "quantize", "config": {"scheme": "int8-weight"}}], ppl=38.3,
                 ood=22.6, params=134_515_008, disk=190.4, rss=560.0, p50=95.0, decode=33.0, top1=0.991, kl=0.006),
        _variant("9b3f4410", "int4-weight gptq g32", [{"kind": "quantize", "config": {"scheme": "int4-weight", "group_size": 32}}],
                 ppl=40.03, ood=24.1, params=134_515_008, disk=121.7, rss=470.0, p50=104.0, decode=30.1, top1=0.93, kl=0.08),
        _variant("3f9a1c2b", "prune layers=6 → distill 200 steps", [prune6, d(200)], ppl=40.7, ood=25.0,
                 params=106_200_000, disk=425.0, rss=760.0, p50=71.0, decode=30.8, top1=0.88, kl=0.19,
                 recovery={"tokens": 204_800, "seconds": 610.0}, curves={"distill": _curve(140.0, 40.7, 200)}),
        _variant("c41d77e2", "prune layers=6 → distill 200 steps → int8-dynamic", [prune6, d(200), Q8], ppl=41.3,
                 ood=25.9, params=106_200_000, disk=150.2, rss=430.0, p50=47.0, decode=46.5, top1=0.86, kl=0.22,
                 recovery={"tokens": 204_800, "seconds": 610.0}, parent="3f9a1c2b", prefill_share=0.71),
        _variant("e8a2b6d4", "prune ffn=0.25 → distill 400 steps", [ffn, d(400)], ppl=38.95, ood=23.6,
                 params=112_900_000, disk=452.0, rss=780.0, p50=76.0, decode=28.9, top1=0.94, kl=0.07,
                 recovery={"tokens": 409_600, "seconds": 1220.0}, curves={"distill": _curve(61.0, 38.95, 400)}),
        _variant("f1e2d3c4", "prune ffn=0.25 → distill 400 steps → int8-dynamic", [ffn, d(400), Q8], ppl=39.2,
                 ood=24.3, params=112_900_000, disk=160.3, rss=450.0, p50=52.0, decode=42.0, top1=0.93, kl=0.08,
                 recovery={"tokens": 409_600, "seconds": 1220.0}, parent="e8a2b6d4", prefill_share=0.68),
        _variant("0d9c8b7a", "wanda 50% (unstructured)", [{"kind": "prune", "config": {"method": "wanda", "sparsity": 0.5}}],
                 ppl=41.8, ood=26.1, params=134_515_008, nonzero=81_000_000, disk=538.1, rss=905.0, p50=93.0,
                 decode=24.2, top1=0.87, kl=0.2),
        _variant("66aa77bb", "prune heads=0.25 (profile failed)", [{"kind": "prune", "config": {"method": "structured", "heads": 0.25}}],
                 ppl=39.7, ood=24.0, params=121_000_000, disk=484.0, rss=800.0, p50=80.0, decode=28.0, profiled=False),
    ]


def sensitivity() -> dict:
    rows = []
    for layer in range(30):
        edge = math.exp(-layer / 2.5) * 3.0 + math.exp(-(29 - layer) / 1.5) * 1.2
        rows.append({"layer": layer, "ratio": 1.0, "value": BASE_PPL * (1.02 + edge + 0.03 * (layer % 3)),
                     "ratio_to_baseline": 1.02 + edge + 0.03 * (layer % 3)})
    return {"model": "builtin:smollm2-135m", "data": "shakespeare", "kind": "layers", "metric": "perplexity",
            "baseline": BASE_PPL, "ratios": [1.0], "eval_tokens": 2048, "rows": rows, "seconds": 95.0}


def run_info(**selection) -> dict:
    return {"model": "builtin:smollm2-135m", "data": "shakespeare", "ood_data": "pydoc", "recipes": ["quick", "search"],
            "created": "2026-11-21T23:10:00Z",
            "machine": {"cpu": "AMD EPYC 9R14 96-Core Processor", "cores": 2, "memory_gb": 7.6, "accelerator": None,
                        "os": "Linux 6.1", "python": "3.12.3", "torch": "2.9.0+cpu", "transformers": "4.57.1", "threads": 2},
            "primary_shape": "1x128",
            "selection": {"tier": "medium", "max_drop": 0.03, "max_latency_ms": None, "max_memory_mb": None,
                          "objective": "latency", **selection}}


def make_run(d: Path, *, vs: list[dict] | None = None, info: dict | None = None, sens: dict | None = None,
             with_sensitivity: bool = True) -> Path:
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    (d / "run.json").write_text(json.dumps(info or run_info(), indent=2))
    (d / "variants.jsonl").write_text("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in (vs or variants())))
    if with_sensitivity:
        (d / "sensitivity.json").write_text(json.dumps(sens or sensitivity()))
    return d


if __name__ == "__main__":
    print(make_run(Path(sys.argv[1])))
