"""Benchmark: does combining the families pay off? Quantization-only, prune+distill-only and combined variants
of SmolLM2-135M on Shakespeare (guard: pydoc and movie reviews), side by side, with the CPU minutes each cost.

One command, resumable: the arms are recipes run through `slimlm.workflows.compress` in one run directory, so
a killed run continues from its stage cache (rerun the same command). Every variant is evaluated in domain
(the Shakespeare eval plays) and out of domain (``--ood-data``, by default `compress`'s: stdlib docstrings and
movie reviews, each on its own; the guard reads the worst) and profiled at the end, interleaved in one process
with one torch thread.

Arms (every prune+distill stage is shared by the combined arms that extend it):
- quantization only: int8-dynamic with SmoothQuant 0.5; int8 weight-only with lm_head and embeddings too;
  int4 GPTQ group 32 with lm_head and embeddings too.
- prune + distill: the builtin ``quick`` recipe's prune and distill stages (what ``make demo`` runs: a light
  structured prune on mixed calibration, KD mixed with hard-label CE on the domain plus a share of pydoc's
  train split; the guard reads its eval split, other modules), at each distillation budget in ``--steps``.
- combined: that distilled student, then each of the three quantizations.

int8-dynamic needs int8 GEMM instructions (AVX-512 VNNI / AMX / AVX-VNNI on x86); without them torch's int8
matmul is tens of times slower than fp32 and evaluating those arms would take most of the budget, so they are
skipped on such a CPU (``--int8-dynamic`` forces them) and the results say so, with the measured ratio.

Targets (issue: make the combination pay off), each printed met or missed with the closest variant:
- medium tier (<= 3% in-domain perplexity drop, guard <= 10% out of domain on each corpus): a variant combining at least two
  families that dominates the best quantization-only variant of the tier (faster prefill at 1x128 and smaller
  on disk);
- moonshot: that variant >= 3x faster prefill and >= 4x smaller on disk than the fp32 teacher;
- high tier (<= 1%): a combined variant faster than the fp32 teacher;
- the CPU minutes that found the medium-tier variant: <= 60.

Usage: python bench/frontier.py [--out bench/results/frontier-run] [--steps 40,80] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MEDIUM, HIGH, GUARD = 0.03, 0.01, 0.10


def int8_gemm_ratio() -> float:
    """How many times slower torch's int8 matmul is than fp32 here (128 x 576 @ 576 x 1536, one thread)."""
    import torch

    a = torch.randint(-127, 127, (128, 576), dtype=torch.int8)
    b = torch.randint(-127, 127, (576, 1536), dtype=torch.int8)
    af, bf = a.float(), b.float()

    def best(f) -> float:
        f()
        times = []
        for _ in range(5):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return min(times)

    return best(lambda: torch._int_mm(a, b)) / best(lambda: af @ bf)


def recipes(a, with_int8_dynamic: bool) -> dict[str, dict]:
    """The arms. The prune and distill stages are the builtin ``quick`` recipe's (what ``make demo`` runs), so
    the benchmark measures the demo's point; ``--steps`` adds longer distillations of the same student."""
    from slimlm.recipes import load_recipe

    quick = load_recipe("quick").to_dict()["stages"]
    prune = next(s for s in quick if "prune" in s)
    distill = next(s for s in quick if "distill" in s)
    calib = {"samples": 32, "seq_len": 256}
    quants = {
        "int8w": {"quantize": {"scheme": "int8-weight", "skip": "none"}},
        "int4": {"quantize": {"scheme": "int4-weight", "group_size": 32, "method": "gptq", "skip": "none"},
                 "calibration": calib},
    }
    if with_int8_dynamic:
        quants["int8dyn"] = {"quantize": {"scheme": "int8-dynamic", "smoothquant": 0.5}, "calibration": calib}
    out = {f"q-{k}": [q] for k, q in quants.items()}
    for steps in a.steps:
        d = {"distill": {**distill["distill"], "steps": steps, "warmup_steps": max(1, steps // 10)}}
        out.update({f"pdq{steps}-{k}": [prune, d, q] for k, q in quants.items()})
        if prune["prune"].get("ffn"):  # a pruned FFN width (1382 of 1536) takes no int4 group size but 2
            q = out[f"pdq{steps}-int4"][-1]
            out[f"pdq{steps}-int4"][-1] = {**q, "quantize": {**q["quantize"], "exclude": ["mlp.down_proj"]}}
    return out


def student_stages() -> str:
    from slimlm.recipes import load_recipe

    stages = [s for s in load_recipe("quick").to_dict()["stages"] if "quantize" not in s]
    return "; ".join(json.dumps(s, sort_keys=True) for s in stages)


def recovery_lines(rows: list[dict], corpora: list[str]) -> list[str]:
    """Share of the one-shot prune's perplexity gap each distillation recovered, per CPU-minute it cost."""
    base = next((r for r in rows if r["arm"] == "baseline"), None)
    pruned = next((r for r in rows if r["families"] == ["prune"]), None)
    pds = sorted((r for r in rows if r["arm"] == "prune+distill"), key=lambda r: r["cpu_min"])
    if not (base and pruned and pds and pruned["ppl"] and base["ppl"]):
        return []
    out = ["", "Recovery per CPU-minute (gap = one-shot prune's perplexity minus the teacher's; > 100% means the "
           "student ended better than the teacher in domain):", "",
           "| distilled student | distill CPU min | gap recovered | per CPU-min | "
           + " | ".join(f"{c} gap recovered" for c in corpora) + " |",
           "|---|---|---|---|" + "---|" * len(corpora)]

    def ppl(r, c):
        return (r["ood"].get(c) or {}).get("ppl")

    for r in pds:
        minutes = r["cpu_min"] - pruned["cpu_min"]
        share = (pruned["ppl"] - r["ppl"]) / (pruned["ppl"] - base["ppl"])
        cells = []
        for c in corpora:
            p, b, s = ppl(pruned, c), ppl(base, c), ppl(r, c)
            cells.append("-" if not (p and b and s) or p == b else f"{(p - s) / (p - b):.1%}")
        out.append(f"| {r['label']} | {minutes:.1f} | {share:.1%} | {share / max(minutes, 1e-9):.1%} | "
                   + " | ".join(cells) + " |")
    return out


def families(v) -> tuple[str, ...]:
    kinds = []
    for s in v.stages:
        k = s.get("kind")
        if k and k not in kinds:
            kinds.append(k)
    return tuple(kinds)


def arm_of(fams: tuple[str, ...]) -> str:
    if not fams:
        return "baseline"
    if fams == ("quantize",):
        return "quantization only"
    if "quantize" not in fams and "prune" in fams and "distill" in fams:
        return "prune+distill"
    if len(fams) >= 2:
        return "combined"
    return "+".join(fams) + " only"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(RESULTS / "frontier-run"), help="run directory (rerun to resume)")
    ap.add_argument("--fresh", action="store_true", help="discard an earlier run in --out and start over")
    ap.add_argument("--steps", type=lambda x: [int(v) for v in x.split(",")], default=[40, 80],
                    help="distillation budgets, comma-separated (4 x 256 tokens a step); 40 is make demo's")
    ap.add_argument("--eval-tokens", type=int, default=4096)
    ap.add_argument("--ood-data", default=None, help="out-of-domain corpora, ','-separated (default: compress's)")
    ap.add_argument("--int8-dynamic", action="store_true", help="run the int8-dynamic arms even without VNNI/AMX")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for profiling (stages use 2)")
    ap.add_argument("--note", default="", help="a line for the results (e.g. what else ran on the machine)")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the results from the run directory and the last frontier.json, measuring nothing")
    a = ap.parse_args()

    from slimlm._quiet import quiet

    quiet()
    import torch

    torch.set_num_threads(2)  # stages (pruning, distillation) use both cores; profiling uses --threads
    import yaml

    from slimlm.profile import machine_info
    from slimlm.recipes.pipeline import RunOptions
    from slimlm.runs import RunDir
    from slimlm.workflows import Selection, compress

    out = Path(a.out)
    if a.report_only:  # re-derive the tables and targets from the run directory; nothing is re-measured
        prev = json.loads((RESULTS / "frontier.json").read_text())
        load_before, load_after = prev["load_before"], prev["load_after"]
        ratio, with_dyn, wall = prev["int8_gemm_slowdown"], prev["int8_dynamic_arms"], prev["wall_s"]
        selected = prev.get("selected_medium")
    else:
        load_before = os.getloadavg()
        ratio = int8_gemm_ratio()
        with_dyn = a.int8_dynamic or ratio < 2.0
        rdir = out.parent / (out.name + "-recipes")  # recipes live beside the run directory (compress owns --out)
        rdir.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, stages in recipes(a, with_dyn).items():
            p = rdir / f"{name}.yaml"
            p.write_text(yaml.safe_dump({"name": name, "stages": stages}, sort_keys=False))
            paths.append(str(p))
        ood = {"ood_data": a.ood_data} if a.ood_data else {}
        opts = RunOptions(data="shakespeare", eval_tokens=a.eval_tokens, seq_len=512, shapes=((1, 128),),
                          decode_tokens=16, repeats=5, threads=a.threads, **ood)
        t0 = time.perf_counter()
        res = compress("builtin:smollm2-135m", paths, out, opts, selection=Selection(tier="medium"),
                       log=lambda m: print(m, flush=True), force=a.fresh)
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()
        selected = res.report.get("selected")

    vs = RunDir(out).variants()
    base = next(v for v in vs if v.is_baseline)
    corpora = list(base.metrics.ood)
    bdisk = base.metrics.number("disk_mb")
    rows = []
    for v in vs:
        m = v.metrics
        drop, ood = m.number("quality_drop"), m.number("ood_quality_drop")
        speed = m.speedup("1x128")
        disk = m.number("disk_mb")
        fams = families(v)
        rows.append({"id": v.id, "label": v.label, "arm": arm_of(fams), "families": list(fams),
                     "ppl": m.number("perplexity"), "ood_ppl": m.number("ood_perplexity"),
                     "ood": {c: {"ppl": x.get("perplexity"), "drop": x.get("quality_drop")} for c, x in m.ood.items()},
                     "quality_drop": drop, "ood_quality_drop": ood, "prefill_speedup": speed, "disk_mb": disk,
                     "disk_reduction": bdisk / disk if bdisk and disk else None,
                     "cpu_min": v.seconds / 60, "tokens": v.recovery.get("tokens", 0)})

    def ok(r, bar) -> bool:
        return (r["quality_drop"] is not None and r["quality_drop"] <= bar
                and (r["ood_quality_drop"] is None or r["ood_quality_drop"] <= GUARD))

    def gap(r, bar) -> str:
        parts = []
        if r["quality_drop"] is not None and r["quality_drop"] > bar:
            parts.append(f"ppl drop {r['quality_drop']:+.2%} > {bar:.0%}")
        if r["ood_quality_drop"] is not None and r["ood_quality_drop"] > GUARD:
            parts.append(f"OOD drop {r['ood_quality_drop']:+.2%} > {GUARD:.0%}")
        return ", ".join(parts)

    def speed(r) -> float:
        return r["prefill_speedup"] or 0.0

    targets = {}
    q_med = [r for r in rows if r["arm"] == "quantization only" and ok(r, MEDIUM)]
    best_q = max(q_med, key=lambda r: (speed(r), r["disk_reduction"] or 0), default=None)
    combined = [r for r in rows if len(r["families"]) >= 2]
    c_med = [r for r in combined if ok(r, MEDIUM)]
    dominating = [r for r in c_med if best_q is None or (speed(r) > speed(best_q)
                                                         and (r["disk_mb"] or 1e18) < (best_q["disk_mb"] or 0))]
    pick = max(dominating, key=lambda r: (speed(r), r["disk_reduction"] or 0), default=None)
    if pick:
        targets["medium_dominates_quant_only"] = {
            "met": True, "variant": pick["label"],
            "detail": f"{speed(pick):.2f}x prefill, {pick['disk_reduction']:.2f}x smaller, ppl drop "
                      f"{pick['quality_drop']:+.2%}, OOD {pick['ood_quality_drop']:+.2%}; best quantization-only: "
                      + (f"{best_q['label']} ({speed(best_q):.2f}x, {best_q['disk_reduction']:.2f}x)" if best_q
                         else "none inside the tier")}
    else:
        def why(r) -> str:
            reasons = [gap(r, MEDIUM)] if not ok(r, MEDIUM) else []
            if best_q and speed(r) <= speed(best_q):
                reasons.append(f"not faster ({speed(r):.2f}x vs {speed(best_q):.2f}x)")
            if best_q and (r["disk_mb"] or 1e18) >= (best_q["disk_mb"] or 0):
                reasons.append(f"not smaller ({r['disk_mb']:.0f} vs {best_q['disk_mb']:.0f} MB)")
            return f"{r['label']}: " + "; ".join(x for x in reasons if x)

        targets["medium_dominates_quant_only"] = {
            "met": False, "variant": None,
            "detail": (f"best quantization-only in the tier: {best_q['label']} ({speed(best_q):.2f}x prefill, "
                       f"{best_q['disk_mb']:.0f} MB). " if best_q else "no quantization-only variant in the tier. ")
                      + ("Each combined variant: " + " | ".join(why(r) for r in combined) if combined
                         else "no combined variant")}
    if pick:
        met = speed(pick) >= 3 and (pick["disk_reduction"] or 0) >= 4
        targets["moonshot_3x_prefill_4x_disk"] = {
            "met": met, "variant": pick["label"],
            "detail": f"{speed(pick):.2f}x prefill (need 3x), {pick['disk_reduction']:.2f}x smaller (need 4x)"}
    else:
        targets["moonshot_3x_prefill_4x_disk"] = {"met": False, "variant": None,
                                                   "detail": "no combined medium-tier variant to judge"}
    c_high = sorted((r for r in combined if ok(r, HIGH)), key=speed, reverse=True)
    fast_high = [r for r in c_high if speed(r) > 1.0]
    if fast_high:
        r = fast_high[0]
        targets["high_faster_than_teacher"] = {"met": True, "variant": r["label"],
                                               "detail": f"{speed(r):.2f}x prefill, ppl drop {r['quality_drop']:+.2%}"}
    else:
        near = c_high[0] if c_high else min(combined, key=lambda r: r["quality_drop"] or 9e9, default=None)
        targets["high_faster_than_teacher"] = {
            "met": False, "variant": near and near["label"],
            "detail": (f"closest: {near['label']}: {gap(near, HIGH) or 'inside the tier'}, {speed(near):.2f}x prefill"
                       if near else "no combined variant")}
    if pick:
        targets["found_within_60_cpu_min"] = {
            "met": pick["cpu_min"] <= 60, "variant": pick["label"],
            "detail": f"{pick['cpu_min']:.1f} CPU-min of stages on its lineage (a fixed recipe, not an open search; "
                      f"this whole benchmark took {wall / 60:.1f} min wall this session)"}
    else:
        targets["found_within_60_cpu_min"] = {"met": False, "variant": None,
                                              "detail": "no medium-tier combined variant was found"}

    result = {"machine": machine_info(), "load_before": load_before, "load_after": load_after,
              "int8_gemm_slowdown": ratio, "int8_dynamic_arms": with_dyn, "wall_s": wall,
              "settings": vars(a), "selected_medium": selected, "variants": rows,
              "targets": targets}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "frontier.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    fmt = lambda x, s: "-" if x is None else f"{x:{s}}"  # noqa: E731
    mach = result["machine"]
    lines = ["# Frontier benchmark: quantization only vs prune+distill vs combined (SmolLM2-135M, Shakespeare)", "",
             f"Machine: {mach.get('cpu')}, {mach.get('cores')} cores, torch {mach.get('torch')}, {a.threads} torch "
             f"thread(s); load average before {load_before[0]:.2f}, after {load_after[0]:.2f}. Wall this session: "
             f"{wall / 60:.1f} min (stages served from the cache cost nothing on a resume).",
             f"int8 GEMM here: torch._int_mm takes {ratio:.2f}x the time of an fp32 matmul (128x576 @ 576x1536); "
             + ("int8-dynamic arms were run." if with_dyn else
                "int8-dynamic arms were skipped (no fast int8 instructions on this CPU; --int8-dynamic forces them)."),
             f"Student: the builtin `quick` recipe's stages (make demo): {student_stages()}; distillation budgets "
             f"{', '.join(map(str, a.steps))} steps x 4 x 256 tokens (warm-up a tenth). "
             f"Quality: perplexity on {a.eval_tokens} tokens of the Shakespeare eval plays and of each out-of-domain "
             f"corpus's eval split ({', '.join(corpora)}; the distillation's general rows come from pydoc's train "
             "split, other modules); the drops are per teacher token, the guard reads the worst.", "",
             "| arm | variant | ppl | drop | " + " | ".join(f"{c} drop" for c in corpora)
             + " | OOD drop (worst) | prefill speedup 1x128 | disk MB | disk reduction | CPU min |",
             "|---|---|---|---|" + "---|" * len(corpora) + "---|---|---|---|---|"]
    order = {"baseline": 0, "quantization only": 1, "prune+distill": 2, "combined": 3}
    for r in sorted(rows, key=lambda r: (order.get(r["arm"], 9), r["label"])):
        lines.append(f"| {r['arm']} | {r['label']} | {fmt(r['ppl'], '.2f')} | {fmt(r['quality_drop'], '+.2%')} | "
                     + "".join(f"{fmt((r['ood'].get(c) or {}).get('drop'), '+.2%')} | " for c in corpora)
                     + f"{fmt(r['ood_quality_drop'], '+.2%')} | "
                     f"{fmt(r['prefill_speedup'], '.2f')}x | {fmt(r['disk_mb'], '.0f')} | "
                     f"{fmt(r['disk_reduction'], '.2f')}x | {r['cpu_min']:.1f} |")
    qrows = [r for r in rows if r["arm"] == "quantization only" and r["prefill_speedup"]]
    if qrows and max(speed(r) for r in qrows) < 1.0:
        fastest = max(qrows, key=speed)
        lines += ["", f"No quantized variant is faster than fp32 at prefill on this CPU (fastest: {fastest['label']}, "
                  f"{speed(fastest):.2f}x): here quantization buys disk and memory, not speed, so speed has to come "
                  "from structured pruning, and every point of it costs recovery tokens (CPU minutes)."]
    lines += recovery_lines(rows, corpora)
    if a.note:
        lines += ["", a.note]
    lines += ["", "Targets:", ""]
    lines += [f"- {'MET' if t['met'] else 'MISSED'}: {k}: {t['detail']}" for k, t in targets.items()]
    (RESULTS / "frontier.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
