"""Pruning benchmark: every variant of the pruning issue side by side, in one process, on one machine.

Quality: perplexity on the Shakespeare eval split (in domain) and on stdlib docstrings (``pydoc``, out of
domain), ratios against the dense model measured in the same run. Calibration windows come from the
Shakespeare calibration split. Efficiency: `slimlm.profile.compare` interleaves the dense model and the
structured variants (plus one unstructured variant, to show that zeros stored densely buy no speed).

Run:  .venv/bin/python bench/prune.py            (writes bench/results/prune.json and prune.md)
      .venv/bin/python bench/prune.py --model tiny:llama --calib-samples 4 --eval-tokens 512 --out /tmp/b
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch

from slimlm.data import load_data
from slimlm.evaluate import evaluate
from slimlm.models import Model, load
from slimlm.profile import compare, parse_shapes
from slimlm.prune import make_calibration, make_config, parse_structured, prune_

UNSTRUCTURED = [
    ("magnitude 50%", "magnitude", {"sparsity": 0.5}),
    ("magnitude 50% OWL", "magnitude", {"sparsity": 0.5, "allocation": "owl"}),
    ("wanda 50%", "wanda", {"sparsity": 0.5}),
    ("wanda 50% OWL", "wanda", {"sparsity": 0.5, "allocation": "owl"}),
    ("sparsegpt 50%", "sparsegpt", {"sparsity": 0.5}),
    ("sparsegpt 50% OWL", "sparsegpt", {"sparsity": 0.5, "allocation": "owl"}),
    ("wanda 2:4", "wanda", {"pattern": "2:4"}),
    ("sparsegpt 2:4", "sparsegpt", {"pattern": "2:4"}),
]
STRUCTURED = [
    ("layers -20%", "layers=0.2"),
    ("ffn -25%", "ffn=0.25"),
    ("heads -33%", "heads=0.33"),
    ("hidden -10%", "hidden=0.1"),
    ("vocab=domain", "vocab=domain"),
]
LOWRANK = [  # the method added through the one-module contract (slimlm/prune/lowrank.py), measured as cut
    ("lowrank 50% mlp", {"rank": 0.5}),
    ("lowrank 25% mlp", {"rank": 0.25}),
]
TARGETS = {
    "unstructured_50": "SparseGPT or Wanda+OWL at 50% within 1.5x dense perplexity (Shakespeare eval)",
    "nm_24": "2:4 (SparseGPT or Wanda, as for 50%) within 2.5x dense perplexity",
    "speedup_vs_flops": "every structured variant's prefill time saving >= 80% of its FLOP saving (1x128)",
    "vocab_params": "vocab=domain removes >= 12% of the parameters",
    "vocab_speed": "vocab=domain speeds up prefill (1x128)",
    "vocab_quality": "vocab=domain perplexity on the domain <= 1.01x dense",
}


WHY_SLOW = {  # the issue asks to say why a structured variant realises less than 80% of its FLOP saving
    "heads -33%": "probable causes (not profiled op by op): the saving is small (one of 3 KV groups, 7.6% of "
                  "the FLOPs) and sits in the q/k/v/o GEMMs, whose output width drops from 576 to 384 columns; "
                  "the per-layer attention work that does not scale with FLOPs (rotary embedding, SDPA dispatch, "
                  "repeating K/V for GQA) stays. With a 7.6% saving, +-2% timing noise moves the share by +-0.25 "
                  "(the previous run of this benchmark measured 1.25).",
    "vocab=domain": "the saving is one GEMM (the LM head, 49,152 -> ~20k rows); the previous run of this benchmark, "
                    "on a machine with 4-7 other jobs, measured 0.77, quieter runs 1.01-1.03.",
}


def _copy(m: Model, name: str) -> Model:
    return Model(hf=copy.deepcopy(m.hf), tokenizer=m.tokenizer, spec=name, provenance={"spec": name, "stages": []})


def _quality(m: Model, corpora: dict, tokens: int) -> dict:
    out = {}
    for name, corpus in corpora.items():
        r = evaluate(m, corpus, max_tokens=tokens)
        out[name] = {"perplexity": r["perplexity"], "tokens": r["tokens"]}
    return out


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--calib-seq-len", type=int, default=512)
    ap.add_argument("--eval-tokens", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--shapes", default="1x128", help="prefill shapes BxS (the targets use 1x128)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 by default: on a shared 2-core CPU, 2 threads ran matmuls 2x slower")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--resume", action="store_true", help="reuse quality rows of a previous partial run")
    ap.add_argument("--add-lowrank", action="store_true",
                    help="measure only the low-rank rows (quality, and latency interleaved with dense) and add them "
                         "to an existing prune.json / prune.md")
    ap.add_argument("--remeasure", action="store_true",
                    help="with --resume: keep the (deterministic) quality rows, redo the interleaved timings")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.add_lowrank:
        _add_lowrank(args, out_dir)
        return
    partial = out_dir / "prune.partial.json"
    rows: dict[str, dict] = json.loads(partial.read_text()) if args.resume and partial.exists() else {}
    if args.remeasure:
        rows.pop("_machine", None)
        for row in rows.values():
            row.pop("profile", None)

    def keep(name: str, row: dict) -> None:
        rows[name] = row
        partial.write_text(json.dumps(rows, indent=1))

    corpora = {"shakespeare": load_data("shakespeare"), "pydoc": load_data("pydoc")}
    dense = load(args.model)
    calib = make_calibration(dense, corpora["shakespeare"], args.calib_samples, args.calib_seq_len)
    _log(f"calibration {tuple(calib.tokens.shape)}; dense quality")
    if "dense" not in rows:
        keep("dense", {"kind": "dense", "params": dense.num_params(), "prune_seconds": 0.0,
                       "quality": _quality(dense, corpora, args.eval_tokens)})

    for name, method, fields in UNSTRUCTURED:
        if name in rows:
            continue
        _log(f"prune {name}")
        m = _copy(dense, name)
        cfg = make_config(method, **fields)
        rep = prune_(m, cfg, calib)
        row = {"kind": "unstructured", "config": cfg.model_dump(), "params": m.num_params(),
               "prune_seconds": rep["seconds"], "sparsity": rep["sparsity"],
               "layer_sparsity": [round(r["achieved"], 4) for r in rep["layers"]],
               "layer_target": [round(r["target"], 4) for r in rep["layers"]]}
        _log(f"  {rep['seconds']:.0f} s; quality")
        row["quality"] = _quality(m, corpora, args.eval_tokens)
        keep(name, row)
        del m

    profiled = all(rows.get(n, {}).get("profile") for n in ["dense"] + [n for n, _ in STRUCTURED])
    if not profiled:
        _measure_structured(dense, calib, corpora, rows, keep, args)
    machine = rows.pop("_machine")
    result = _summarise(rows, args, machine)
    (out_dir / "prune.json").write_text(json.dumps(result, indent=1))
    md = _markdown(result)
    (out_dir / "prune.md").write_text(md)
    print(md)


def _measure_structured(dense, calib, corpora, rows, keep, args) -> None:
    structured_models = []
    for name, spec in STRUCTURED:
        _log(f"prune {name}")
        m = _copy(dense, name)
        cfg = parse_structured(spec)
        rep = prune_(m, cfg, calib)
        structured_models.append(m)
        row = rows.get(name, {})
        row.update({"kind": "structured", "config": cfg.model_dump(), "params": m.num_params(),
                    "prune_seconds": rep["seconds"], "shape": rep["shape_after"]})
        if "layers" in rep:
            row["removed_layers"] = rep["layers"]["removed"]
        if "vocab" in rep:
            row["vocab"] = rep["vocab"]
        if "quality" not in row:
            _log(f"  {rep['seconds']:.0f} s; quality")
            row["quality"] = _quality(m, corpora, args.eval_tokens)
        keep(name, row)

    _log("latency (interleaved)")
    sparse_ref = _copy(dense, "wanda 50% (zeros stored dense)")
    prune_(sparse_ref, make_config("wanda", sparsity=0.5), calib)
    models = [dense, *structured_models, sparse_ref]
    dense.spec = "dense"
    prof = compare(models, shapes=parse_shapes(args.shapes), decode_tokens=64, threads=args.threads,
                   repeats=args.repeats, memory=True)
    names = ["dense"] + [n for n, _ in STRUCTURED] + ["wanda 50% (zeros stored dense)"]
    for name, p in zip(names, prof, strict=True):
        row = rows.setdefault(name, {"kind": "unstructured"})
        row["profile"] = {k: p.get(k) for k in ("params", "nonzero_params", "disk_mb", "peak_rss_mb",
                                                  "decode_tokens_per_s", "ratios")}
        row["profile"]["latency_p50_ms"] = {k: v["p50"] for k, v in p["latency_ms"].items()}
        row["profile"]["latency_p90_ms"] = {k: v["p90"] for k, v in p["latency_ms"].items()}
        row["profile"]["gflops"] = {k: v / 1e9 for k, v in p["flops"].items()}
        keep(name, row)
    keep("_machine", {**prof[0]["machine"], "threads": prof[0]["threads"], "load_average": list(os.getloadavg()),
                      "roofline": {k: prof[0]["roofline"][k] for k in ("peak_gflops", "peak_gb_s")}})


def _add_lowrank(args, out_dir: Path) -> None:
    """Low-rank rows beside an earlier full run: quality ratios against its (deterministic) dense perplexity,
    speed interleaved with dense in this session; the rows record when and under what load."""
    result = json.loads((out_dir / "prune.json").read_text())
    rows = result["variants"]
    base = rows["dense"]["quality"]
    corpora = {"shakespeare": load_data("shakespeare"), "pydoc": load_data("pydoc")}
    dense = load(args.model)
    load_before = list(os.getloadavg())
    models, names = [dense], ["dense"]
    for name, fields in LOWRANK:
        _log(f"prune {name}")
        m = _copy(dense, name)
        cfg = make_config("lowrank", **fields)
        rep = prune_(m, cfg, None)
        _log(f"  {rep['seconds']:.0f} s; quality")
        q = _quality(m, corpora, args.eval_tokens)
        rows[name] = {"kind": "lowrank", "config": cfg.model_dump(), "params": m.num_params(),
                      "prune_seconds": rep["seconds"], "factorised": rep["factorised"], "ranks": rep["ranks"],
                      "quality": q, "ppl_ratio": {k: q[k]["perplexity"] / base[k]["perplexity"] for k in q}}
        models.append(m)
        names.append(name)
    _log("latency (interleaved with dense)")
    dense.spec = "dense"
    prof = compare(models, shapes=parse_shapes(args.shapes), decode_tokens=64, threads=args.threads,
                   repeats=args.repeats, memory=True)
    session = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
               "dense_p50_ms_this_session": prof[0]["latency_ms"]["1x128"]["p50"]}
    for name, p in zip(names[1:], prof[1:], strict=True):
        row = rows[name]
        row["profile"] = {k: p.get(k) for k in ("params", "nonzero_params", "disk_mb", "peak_rss_mb",
                                                  "decode_tokens_per_s", "ratios")}
        row["profile"]["latency_p50_ms"] = {k: v["p50"] for k, v in p["latency_ms"].items()}
        row["profile"]["latency_p90_ms"] = {k: v["p90"] for k, v in p["latency_ms"].items()}
        row["profile"]["gflops"] = {k: v / 1e9 for k, v in p["flops"].items()}
        r = p["ratios"]
        flop_saving, time_saving = 1 - r["flops_1x128"], 1 - 1 / r["prefill_speedup_1x128"]
        row["realised_share_of_flop_saving"] = time_saving / flop_saving if flop_saving > 1e-9 else None
        row["session"] = session
    result["lowrank_session"] = session
    (out_dir / "prune.json").write_text(json.dumps(result, indent=1))
    md = _markdown(result)
    (out_dir / "prune.md").write_text(md)
    print(md)


def _summarise(rows: dict, args, machine: dict) -> dict:
    base = rows["dense"]["quality"]
    for row in rows.values():
        q = row.get("quality")
        if q:
            row["ppl_ratio"] = {k: q[k]["perplexity"] / base[k]["perplexity"] for k in q}
        prof = row.get("profile")
        if prof and prof.get("ratios"):
            r = prof["ratios"]
            flop_saving = 1 - r["flops_1x128"]
            time_saving = 1 - 1 / r["prefill_speedup_1x128"]
            row["realised_share_of_flop_saving"] = time_saving / flop_saving if flop_saving > 1e-9 else None
    ratio = {n: r.get("ppl_ratio", {}).get("shakespeare") for n, r in rows.items()}
    best = min(("sparsegpt 50%", "sparsegpt 50% OWL", "wanda 50% OWL"), key=lambda n: ratio[n])
    shares = {n: rows[n].get("realised_share_of_flop_saving") for n, _ in STRUCTURED}
    v = rows["vocab=domain"]
    removed = 1 - v["params"] / rows["dense"]["params"]
    speed = v["profile"]["ratios"]["prefill_speedup_1x128"]
    met = {  # (met, measured value as text)
        "unstructured_50": (ratio[best] <= 1.5, f"{best}: {ratio[best]:.3f}x"),
        "nm_24": (min(ratio["sparsegpt 2:4"], ratio["wanda 2:4"]) <= 2.5,
                  f"sparsegpt 2:4: {ratio['sparsegpt 2:4']:.3f}x, wanda 2:4: {ratio['wanda 2:4']:.3f}x (no "
                  "reconstruction: each group of 4 loses its 2 lowest |W|*|X| scores, nothing repairs the rest)"),
        "speedup_vs_flops": (all(s is not None and s >= 0.8 for s in shares.values()),
                             ", ".join(f"{n}: {s:.2f}" for n, s in shares.items() if s is not None)),
        "vocab_params": (removed >= 0.12, f"{removed:.1%} removed"),
        "vocab_speed": (speed > 1.0, f"{speed:.2f}x"),
        "vocab_quality": (ratio["vocab=domain"] <= 1.01, f"{ratio['vocab=domain']:.3f}x"),
    }
    return {"benchmark": "prune", "model": args.model, "data": "shakespeare (calibration split -> eval split)",
            "out_of_domain": "pydoc (Python stdlib docstrings, eval split)",
            "settings": {"calibration": f"{args.calib_samples} x {args.calib_seq_len} tokens",
                         "eval_tokens": args.eval_tokens, "eval_seq_len": 512, "latency_repeats": args.repeats,
                         "threads": args.threads, "shapes": args.shapes},
            "machine": machine, "measured_at": time.strftime(  # when the last measurement was written
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime((Path(args.out) / "prune.partial.json").stat().st_mtime)),
            "targets": {k: {"target": TARGETS[k], "met": bool(met[k][0]), "measured": met[k][1]} for k in TARGETS},
            "variants": rows}


def _f(v, d=2):
    return "-" if v is None else f"{v:.{d}f}"


def _markdown(res: dict) -> str:
    rows = res["variants"]
    m = res["machine"]
    lines = [f"# Pruning benchmark ({res['model']})", "",
             f"Measurements finished {res['measured_at']} on {m.get('cpu')} ({m.get('cores')} cores, {m.get('threads')} threads; "
             f"roofline {m['roofline']['peak_gflops']:.0f} GFLOP/s, {m['roofline']['peak_gb_s']:.1f} GB/s), "
             f"torch {m.get('torch')}. The machine was shared with other jobs: latencies are noisy, ratios come "
             "from interleaved runs in one process.", "",
             f"Calibration: {res['settings']['calibration']} from the Shakespeare calibration split. Perplexity: "
             f"{res['settings']['eval_tokens']} tokens, windows of 512, on the Shakespeare eval split (in domain) "
             "and on stdlib docstrings (`pydoc`, out of domain). Command: "
             f"`.venv/bin/python bench/prune.py --threads {res['settings']['threads']}` (one thread: on this "
             "oversubscribed 2-core machine two threads ran matmuls 2x slower than one).", "",
             "## Quality", "",
             "| variant | params | sparsity | ppl shakespeare | × dense | ppl pydoc | × dense | prune s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        if "quality" not in r:
            continue
        q, pr = r["quality"], r.get("ppl_ratio", {})
        lines.append(f"| {name} | {r['params'] / 1e6:.1f}M | {_f(r.get('sparsity'))} | "
                     f"{_f(q['shakespeare']['perplexity'])} | {_f(pr.get('shakespeare'), 3)} | "
                     f"{_f(q['pydoc']['perplexity'])} | {_f(pr.get('pydoc'), 3)} | {_f(r.get('prune_seconds'), 0)} |")
    shapes = [k for k in next(r["profile"]["latency_p50_ms"] for r in rows.values() if r.get("profile"))]
    head = "| variant | params | disk MB | " + " | ".join(f"GFLOP {k} | p50 ms {k} | speedup {k}" for k in shapes)
    lines += ["", "## Efficiency (interleaved, ratios against dense)", "",
              head + " | decode tok/s | decode speedup | share of FLOP saving realised (1x128) |",
              "|---|---|---|" + "---|---|---|" * len(shapes) + "---|---|---|"]
    for name, r in rows.items():
        p = r.get("profile")
        if not p:
            continue
        ra = p["ratios"]
        cells = " | ".join(f"{_f(p['gflops'][k], 1)} | {_f(p['latency_p50_ms'][k], 0)} | "
                           f"{_f(ra.get('prefill_speedup_' + k))}" for k in shapes)
        lines.append(f"| {name} | {p['params'] / 1e6:.1f}M | {_f(p.get('disk_mb'), 0)} | {cells} | "
                     f"{_f(p.get('decode_tokens_per_s'), 1)} | {_f(ra.get('decode_speedup'))} | "
                     f"{_f(r.get('realised_share_of_flop_saving'))} |")
    wd = rows.get("wanda 50% (zeros stored dense)", {}).get("profile", {}).get("ratios", {})
    pr = {n: r.get("ppl_ratio", {}) for n, r in rows.items()}
    lines += ["", "## Notes", "",
              f"- Unstructured zeros are stored dense: Wanda 50% runs at {_f(wd.get('prefill_speedup_1x128'))}x "
              f"prefill and {_f(wd.get('decode_speedup'))}x decode, with the same disk size as dense.",
              f"- Calibrated on Shakespeare, SparseGPT loses more out of domain than Wanda: 50% gives "
              f"{_f(pr['sparsegpt 50%'].get('shakespeare'))}x in domain but {_f(pr['sparsegpt 50%'].get('pydoc'))}x "
              f"on pydoc (Wanda: {_f(pr['wanda 50%'].get('shakespeare'))}x / {_f(pr['wanda 50%'].get('pydoc'))}x); "
              f"SparseGPT 2:4: {_f(pr['sparsegpt 2:4'].get('shakespeare'))}x / {_f(pr['sparsegpt 2:4'].get('pydoc'))}x.",
              "- vocab=domain keeps the tokens of every split of `shakespeare` (the eval plays included), so the "
              "in-domain eval is tokenized exactly as before and its perplexity drops slightly (the softmax "
              "no longer spreads mass over removed tokens). On pydoc the trimmed tokenizer splits unseen tokens "
              "into smaller kept pieces, so that perplexity is over a different, longer token sequence.",
              "- Structured variants are measured as cut, with no retraining.",
              f"- Latencies: {m.get('context') or 'load average at the end of the timings ' + str(m.get('load_average'))};"
              " only the interleaved ratios are comparable."]
    for name, why in WHY_SLOW.items():
        share = rows.get(name, {}).get("realised_share_of_flop_saving")
        if share is not None and share < 0.8:
            lines.append(f"- {name} realised {share:.2f} of its FLOP saving: {why}")
    lr = res.get("lowrank_session")
    if lr:
        lines.append(f"- Low-rank rows (truncated SVD of the MLP projections, `slimlm/prune/lowrank.py`, no "
                     f"retraining) were added by `bench/prune.py --add-lowrank` at {lr['measured_at']}, timed "
                     f"interleaved with the dense model in that session (its p50 then: "
                     f"{lr['dense_p50_ms_this_session']:.0f} ms; load average {lr['load_average_before'][0]:.1f} "
                     f"before, {lr['load_average_after'][0]:.1f} after, from other jobs sharing the CPU); their "
                     "ratios are against that session's dense timing.")
    lines += ["", "## Targets", ""]
    for t in res["targets"].values():
        lines.append(f"- {'MET' if t['met'] else 'MISSED'}: {t['target']} (measured: {t['measured']})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
