"""Benchmark: which general text keeps a distilled student general: a shipped corpus or the teacher's samples?

Teacher builtin:smollm2-135m; student = the teacher pruned to about half its non-embedding parameters
(structured, layers=10, ffn=0.35, as in bench/distill.py). Three arms distil it with the same loss (0.5 forward
KL + 0.5 CE) and the same token budget on the Shakespeare train split:

- ``domain``: Shakespeare only;
- ``pydoc``: half of the rows from the stdlib docstrings (`--general-data pydoc --general-share 0.5`);
- ``samples``: half of the rows from text sampled from the teacher (`slimlm generate`, then
  `--general-data DIR --general-share 0.5`).

Each student (and the teacher) is scored on four texts: Shakespeare's eval plays (the domain), pydoc's eval
modules (the pydoc arm trains on its other modules), the eval rows of the teacher's samples (the samples arm
trains on its other rows) and movie-review snippets (rotten-tomatoes' eval split), which no arm trains on:
that column is the fair test of "general". Figures are perplexity relative to the teacher's on the same tokens.

Targets: (1) the samples arm loses less on the movie reviews than the pydoc arm; (2) the samples arm loses less
on pydoc than the domain-only arm (general text helps even on a kind of text it does not contain).

Finished arms are kept in bench/results/general_text.partial.json (and the sample in the slimlm cache), so an
interrupted run resumes. Run:  .venv/bin/python bench/general_text.py --steps 60 --beside "nothing"
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
NAME = "general_text"
PRUNE = {"layers": 10, "ffn": 0.35}
ARMS = ("domain", "pydoc", "samples")
TEXTS = ("shakespeare", "pydoc", "samples", "reviews")


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def _machine() -> dict:
    from slimlm.profile import machine_info

    return {**machine_info(), "threads": torch.get_num_threads()}


def _reviews():
    """Rotten-tomatoes' eval snippets as plain text (no labels): a language-modelling corpus."""
    from slimlm.data import Corpus, Document, load_data

    docs = [Document(d.text, d.source) for d in load_data("rotten-tomatoes").split("eval")]
    return Corpus("reviews", {"train": docs, "calibration": docs, "eval": docs})


def _scores(model, texts: dict, tokens: int) -> dict:
    from slimlm.evaluate import evaluate

    return {name: evaluate(model, corpus, max_tokens=tokens)["perplexity"] for name, corpus in texts.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="builtin:smollm2-135m")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--share", type=float, default=0.5, help="share of general rows in the mixing arms")
    p.add_argument("--sample-tokens", type=int, default=40_000)
    p.add_argument("--sample-batch", type=int, default=32)
    p.add_argument("--eval-tokens", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--arms", nargs="+", default=list(ARMS))
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--beside", default="", help="what else ran on the machine during the run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from slimlm._io import cache_dir, write_json_atomic
    from slimlm.data import load_data
    from slimlm.distill import DistillConfig, distill_run
    from slimlm.distill.samples import make_config, sample_text
    from slimlm.models import load
    from slimlm.prune import StructuredConfig, make_calibration, prune_

    RESULTS.mkdir(exist_ok=True)
    partial = RESULTS / f"{NAME}.partial.json"
    started = time.strftime("%Y-%m-%d %H:%M")
    load_start = os.getloadavg()
    base = DistillConfig(steps=args.steps, lr=5e-4, batch_size=4, seq_len=256, alpha=0.5,
                         warmup_steps=max(1, args.steps // 10), min_lr_ratio=0.1, clip=1.0, seed=0)
    key = {"teacher": args.teacher, "prune": PRUNE, "config": base.model_dump(mode="json"), "share": args.share,
           "sample_tokens": args.sample_tokens, "eval_tokens": args.eval_tokens}
    data = json.loads(partial.read_text()) if partial.exists() and not args.fresh else {}
    if data.get("key") != key:
        data = {"key": key, "arms": {}}

    teacher = load(args.teacher)
    corpus = load_data("shakespeare")

    # 1. the teacher's samples (resumable; kept in the slimlm cache, outside the repository)
    sample_dir = cache_dir("bench") / f"{NAME}-samples"
    cfg = make_config(tokens=args.sample_tokens, length=256, batch_size=args.sample_batch, temperature=1.0,
                      top_p=0.95, seed=0)
    log("sampling", args.sample_tokens, "tokens from", args.teacher, "into", sample_dir)
    done = lambda d, n, t: log(f"  sampled {n}/{t} tokens")  # noqa: E731
    sampled = sample_text(teacher, sample_dir, cfg, resume=(sample_dir / "samples.json").exists(), device="cpu",
                          progress=done)
    data["samples"] = {k: sampled[k] for k in ("rows", "tokens", "eos_rows", "seconds", "tokens_per_s", "settings")}
    samples = load_data(str(sample_dir))
    texts = {"shakespeare": corpus, "pydoc": load_data("pydoc"), "samples": samples, "reviews": _reviews()}

    if "teacher" not in data:
        data["teacher"] = _scores(teacher, texts, args.eval_tokens)
    log("teacher", data["teacher"])

    # 2. the pruned student, once (every arm starts from a copy)
    t0 = time.perf_counter()
    student0 = copy.deepcopy(teacher)
    prune_(student0, StructuredConfig(**PRUNE), make_calibration(student0, corpus, n=32, seq_len=256, seed=0))
    data["student"] = {"params": student0.num_params(), "prune_seconds": round(time.perf_counter() - t0, 1),
                       "before_training": data.get("student", {}).get("before_training")
                       or _scores(student0, texts, args.eval_tokens)}
    log("student", data["student"])

    for arm in [a for a in ARMS if a in args.arms]:
        if arm in data["arms"]:
            log(arm, "done already")
            continue
        log("arm", arm)
        student = copy.deepcopy(student0)
        general = {"domain": {}, "pydoc": {"general_data": "pydoc", "general_share": args.share},
                   "samples": {"general_data": str(sample_dir), "general_share": args.share}}[arm]
        cfg_arm = base.model_copy(update=general)
        t0 = time.perf_counter()

        def on_metrics(m):
            if m.get("step", 0) % 10 == 0 and "loss" in m:
                log(f"  step {m['step']}/{m['steps']} loss {m['loss']:.3f} eta {m['eta_s']:.0f}s")

        res = distill_run(student, teacher, corpus, cfg_arm, on_metrics=on_metrics)
        rec = {"train_seconds": round(time.perf_counter() - t0, 1), "tokens": res.tokens,
               "ppl": _scores(student, texts, args.eval_tokens)}
        data["arms"][arm] = rec
        write_json_atomic(partial, data)
        log(arm, rec)
        del student

    data["run"] = {"started": started, "ended": time.strftime("%Y-%m-%d %H:%M"), "load_start": load_start,
                   "load_end": os.getloadavg(), "beside": args.beside or "nothing else", "machine": _machine()}
    write_json_atomic(partial, data)
    report(data)


def report(data: dict) -> None:
    from slimlm._io import write_json_atomic, write_text_atomic

    t = data["teacher"]
    rel = {arm: {x: rec["ppl"][x] / t[x] - 1 for x in TEXTS} for arm, rec in data["arms"].items()}
    rel["untrained"] = {x: data["student"]["before_training"][x] / t[x] - 1 for x in TEXTS}
    targets = []
    if {"samples", "pydoc"} <= rel.keys():
        targets.append(("samples arm loses less on movie reviews (seen by no arm) than the pydoc arm",
                        rel["samples"]["reviews"] < rel["pydoc"]["reviews"]))
    if {"samples", "domain"} <= rel.keys():
        targets.append(("samples arm loses less on pydoc than the domain-only arm",
                        rel["samples"]["pydoc"] < rel["domain"]["pydoc"]))
    run, s = data["run"], data["samples"]
    lines = [f"# {NAME}: which general text keeps a distilled student general", "",
             f"Run {run['started']} – {run['ended']}, {run['machine'].get('cpu', '?')}, "
             f"{run['machine']['threads']} torch threads; load average {run['load_start'][0]:.2f} at the start, "
             f"{run['load_end'][0]:.2f} at the end; beside it: {run['beside']}.", "",
             f"Teacher {data['key']['teacher']}; student pruned with {data['key']['prune']} "
             f"({data['student']['params']:,} parameters); every arm {data['key']['config']['steps']} steps x 4 x 256 "
             f"tokens, 0.5 forward KL + 0.5 CE, lr 5e-4; mixing arms take a share of "
             f"{data['key']['share']} of their rows from the general text. Teacher sample: {s['tokens']:,} tokens in "
             f"{s['rows']} rows ({s['eos_rows']} ended at EOS), temperature {s['settings']['temperature']}, top-p "
             f"{s['settings']['top_p']}, {s['tokens_per_s']} tokens/s on this CPU.", "",
             "Perplexity against the teacher's on the same tokens (eval splits, "
             f"{data['key']['eval_tokens']} tokens each; lower is better):", "",
             "| student | shakespeare | pydoc | teacher samples | movie reviews | train s |", "|---|---|---|---|---|---|"]
    lines.append("| teacher (absolute ppl) | " + " | ".join(f"{t[x]:.2f}" for x in TEXTS) + " | - |")
    for arm in ("untrained", *[a for a in ARMS if a in data["arms"]]):
        secs = data["arms"][arm]["train_seconds"] if arm in data["arms"] else "-"
        lines.append(f"| {arm} | " + " | ".join(f"{rel[arm][x]:+.1%}" for x in TEXTS) + f" | {secs} |")
    lines += ["", "Targets:", ""] + [f"- {'MET' if ok else 'MISSED'}: {name}" for name, ok in targets]
    text = "\n".join(lines) + "\n"
    print(text)
    write_text_atomic(RESULTS / f"{NAME}.md", text)
    write_json_atomic(RESULTS / f"{NAME}.json", {**data, "relative": rel,
                                                 "targets": [{"target": n, "met": ok} for n, ok in targets]})


if __name__ == "__main__":
    main()
