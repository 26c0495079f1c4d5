"""Training memory benchmark: peak RSS of distillation and QAT on a model of Qwen2-0.5B's shape.

    .venv/bin/python bench/train_memory.py           # 494M parameters, 151,936 vocabulary (about 12 minutes)
    .venv/bin/python bench/train_memory.py --quick   # a 5M-parameter model of the same family, to check the script

Random weights in Qwen2-0.5B's shape (24 blocks, hidden 896, FFN 4864, 14 heads / 2 KV heads, tied
151,936-token vocabulary; nothing is downloaded). Each configuration runs in its own process, one after the
other, so each peak (``ru_maxrss``) is that configuration's alone:

- distillation into a copy with 20 of the 24 blocks (its own random weights): 2 steps of 4 x 256 tokens of the
  Shakespeare train split, forward KL, the library's defaults (teacher weights in bfloat16 at this size), then
  with ``alpha`` 0.5 (KD + CE), ``--freeze-embeddings`` and ``--gradient-checkpointing``;
- QAT to int4 (RTN, group 32) on 12 calibration rows of 256 random ids (4 held out), 2 steps of 4 rows.

Target (issue 14: "memory must fit"): every configuration peaks below this machine's memory. Writes
bench/results/train-memory.json and .md with the machine and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SHAPES = {  # Qwen2-0.5B's shape, and a small one of the same family for --quick
    "full": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "vocab_size": 151936},
    "quick": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 32000},
}
CONFIGS = {
    "distill defaults": {"kind": "distill"},
    "distill --alpha 0.5": {"kind": "distill", "alpha": 0.5},
    "distill --freeze-embeddings": {"kind": "distill", "freeze_embeddings": True},
    "distill --gradient-checkpointing": {"kind": "distill", "gradient_checkpointing": True},
    "qat int4 rtn": {"kind": "qat"},
    "qat int4 rtn --gradient-checkpointing": {"kind": "qat", "gradient_checkpointing": True},
}


def _model(shape: dict, layers: int | None, seed: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**{**shape, "num_hidden_layers": layers or shape["num_hidden_layers"]},
                      tie_word_embeddings=True, max_position_embeddings=1024)
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(cfg).eval()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(name: str, shape_name: str, threads: int) -> dict:
    """Run one configuration in this process; returns its figures."""
    import torch

    torch.set_num_threads(threads)
    spec, shape = CONFIGS[name], SHAPES[shape_name]
    t0 = time.perf_counter()
    if spec["kind"] == "qat":
        from slimlm.quantize import Int4WeightConfig, QATConfig, quantize_

        hf = _model(shape, None, 0)
        params = sum(p.numel() for p in hf.parameters())  # before quantizing (packed weights are buffers)
        loaded = _rss_mb()
        calib = torch.randint(0, shape["vocab_size"], (12, 256), generator=torch.Generator().manual_seed(1))
        opts = {k: v for k, v in spec.items() if k != "kind"}
        report = quantize_(hf, QATConfig(target=Int4WeightConfig(method="rtn"), steps=2, batch_size=4, holdout=4,
                                         lr=1e-5, **opts), calib)
        q = report["qat"]
        losses = {"kd_first": q.get("kd_loss_first"), "kd_last": q.get("kd_loss_last")}
        extra = {"teacher_precision": q.get("teacher_precision")}
    else:
        from slimlm.data import load_data
        from slimlm.distill import DistillConfig, distill_run
        from slimlm.models import Model
        from slimlm.models.tiny import byte_tokenizer

        tok = byte_tokenizer("qwen2")
        teacher = Model(hf=_model(shape, None, 0), tokenizer=tok, spec="teacher", provenance={"spec": "t", "stages": []})
        layers = shape["num_hidden_layers"] * 5 // 6  # 20 of 24 blocks
        student = Model(hf=_model(shape, layers, 1), tokenizer=tok, spec="student", provenance={"spec": "s", "stages": []})
        loaded = _rss_mb()
        opts = {k: v for k, v in spec.items() if k != "kind"}
        res = distill_run(student, teacher, load_data("shakespeare"),
                          DistillConfig(steps=2, seq_len=256, batch_size=4, **opts))
        losses = res.final_losses
        params = teacher.num_params()
        extra = {"teacher_precision": res.teacher_precision, "s_per_step": res.seconds / max(res.steps, 1)}
    return {"config": name, "params": params, "rss_loaded_mb": loaded, "peak_rss_mb": _rss_mb(),
            "seconds": time.perf_counter() - t0, "losses": losses, **extra}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="A small model of the same family (checks the script).")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--beside", default="", help="What else ran on the machine, for the report.")
    p.add_argument("--keep-others", action="store_true", help="Keep the rows of configurations not run now from "
                   "the last results file (each row keeps the date it was measured).")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    shape = "quick" if a.quick else "full"
    if a.child:
        print("RESULT " + json.dumps(child(a.child, shape, a.threads)), flush=True)
        return
    sys.path.insert(0, str(ROOT.parent / "src"))
    import psutil

    from slimlm.profile.machine import machine_info

    total_mb = psutil.virtual_memory().total / 2**20
    load_before = list(os.getloadavg())
    name = "train-memory-quick" if a.quick else "train-memory"
    earlier = {}
    if a.keep_others and (ROOT / "results" / f"{name}.json").exists():
        last = json.loads((ROOT / "results" / f"{name}.json").read_text())
        earlier = {r["config"]: {**r, "measured": r.get("measured", last["date"]),
                                 "beside": r.get("beside", last.get("beside", "")),
                                 "load": r.get("load", [last["load_average_before"][0], last["load_average_after"][0]])}
                   for r in last["rows"]}
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    for config in CONFIGS:
        if config not in a.configs and config in earlier:
            rows.append(earlier[config])
            continue
        if config not in a.configs:
            continue
        name_ = config
        print(f"== {name_}", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--child", name_, "--threads", str(a.threads)] + (["--quick"] if a.quick else [])
        run = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
        if run.returncode or not lines:
            rows.append({"config": name_, "error": (run.stderr.strip().splitlines() or ["no output"])[-1],
                         "returncode": run.returncode, "measured": now, "beside": a.beside})
        else:
            rows.append({**json.loads(lines[-1][len("RESULT "):]), "measured": now, "beside": a.beside})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    fits = [r for r in rows if "peak_rss_mb" in r and r["peak_rss_mb"] < total_mb]
    targets = {"fits_in_memory": {"met": len(fits) == len(rows),
                                  "detail": f"{len(fits)} of {len(rows)} configurations peaked below this machine's "
                                            f"{total_mb / 1024:.1f} GB"}}
    res = {"benchmark": "train-memory", "shape": SHAPES[shape], "quick": a.quick, "threads": a.threads,
           "machine": machine_info(), "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
           "date": now, "beside": a.beside, "rows": rows, "targets": targets}
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    md = render(res)
    (ROOT / "results" / f"{name}.md").write_text(md)
    print(md)


def render(res: dict) -> str:
    m = res["machine"]
    out = ["# Training memory: distillation and QAT on a model of Qwen2-0.5B's shape (bench/train_memory.py)", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, torch {m['torch']}, transformers "
           f"{m['transformers']}; {res['threads']} threads; load average before {res['load_average_before'][0]:.2f}, "
           f"after {res['load_average_after'][0]:.2f}; {res['date']}. Shape: {res['shape']} (tied embeddings, random "
           "weights). Distillation: into 5/6 of the blocks (20 of 24 at full size), 2 steps of 4 x 256 tokens, forward KL. "
           "QAT: int4 RTN, 12 x 256 calibration ids, 2 steps of 4 rows. One process per row, run one after the other.", "",
           "s/step: the distillation's wall time (its teacher's bfloat16 stash and restore included) / steps.", "",
           "| configuration | parameters | RSS loaded MB | peak RSS MB | s/step | teacher weights | losses |",
           "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if "error" in r:
            out.append(f"| {r['config']} | failed: {r['error']} | | | | | |")
            continue
        sps = f"{r['s_per_step']:.1f}" if r.get("s_per_step") else "-"
        losses = ", ".join(f"{k} {v:.4f}" for k, v in r["losses"].items() if v is not None)
        out.append(f"| {r['config']} | {r['params'] / 1e6:.0f}M | {r['rss_loaded_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
                   f"{sps} | {r.get('teacher_precision')} | {losses} |")
    notes = [f"- {r['config']}: {r['note']}" for r in res["rows"] if r.get("note")]
    notes += [f"- {r['config']}: measured {r['measured']} in an earlier run of this script (load average before "
              f"{r['load'][0]:.2f}, after {r['load'][1]:.2f}; beside: {r.get('beside') or 'not recorded'})"
              for r in res["rows"] if r.get("measured") and r["measured"] != res["date"]]
    out += ["", f"What ran beside: {res.get('beside') or 'not recorded'}.", ""]
    out += (["Notes:", ""] + notes + [""]) if notes else []
    out += ["Targets:", ""]
    out += [f"- {'MET' if t['met'] else 'MISSED'}: {k}: {t['detail']}" for k, t in res["targets"].items()]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
