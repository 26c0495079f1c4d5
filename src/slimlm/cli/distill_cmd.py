"""`slimlm distill`: train a (pruned) student to imitate a teacher; also iterative prune-distill cycles.

Shared with `slimlm finetune` (which imports the helpers below): the progress bar that shows loss, learning
rate, tokens/s and ETA, checkpoint placement and the JSON result.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from slimlm.cli._out import emit_json, err, fmt, out, status


@contextmanager
def train_bar(enabled: bool, title: str) -> Iterator[tuple]:
    """Yield ``(progress, on_metrics)``: one rich bar with loss / lr / tok/s / ETA, or log lines without a tty."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from slimlm.cli._out import _force

    state: dict = {"task": None, "last": 0.0}
    if not enabled:
        yield (lambda *a: None), (lambda m: None)
        return
    if not err.is_terminal and not _force():
        def log_metrics(m: dict) -> None:
            if "eval" in m:
                status(f"{title}: eval at step {m['step']}: " + ", ".join(
                    f"{k} {fmt(v)}" for k, v in m["eval"].items() if k not in ("step", "tokens")))
            elif time.monotonic() - state["last"] > 10 or m["step"] == m["steps"]:
                state["last"] = time.monotonic()
                status(f"{title}: step {m['step']}/{m['steps']} loss {m['loss']:.4f} lr {m['lr']:.2e} "
                       f"{m['tokens_per_s']:.0f} tok/s eta {m['eta_s']:.0f}s")
        yield (lambda *a: None), log_metrics
        return
    bars = Progress(TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err, transient=True)

    def on_metrics(m: dict) -> None:
        if "eval" in m:
            err.print(f"eval at step {m['step']}: " + ", ".join(
                f"{k} {fmt(v)}" for k, v in m["eval"].items() if k not in ("step", "tokens")), highlight=False)
            return
        info = f"loss {m['loss']:.4f}  lr {m['lr']:.2e}  {m['tokens_per_s']:.0f} tok/s"
        if state["task"] is None:
            state["task"] = bars.add_task(title, total=m["steps"], info=info)
        bars.update(state["task"], completed=m["step"], total=m["steps"], info=info)

    with bars:
        yield (lambda *a: None), on_metrics


def checkpoint_dir_for(out_dir: Path, resume: bool, checkpoint_every: int) -> Path:
    """Checkpoints live beside the output (``OUT.checkpoint``): saving the result replaces ``OUT`` whole."""
    from slimlm._io import is_foreign
    from slimlm.errors import ConfigError

    ckpt = out_dir.with_name(out_dir.name + ".checkpoint")
    if is_foreign(ckpt, "meta.json"):
        raise ConfigError(f"{ckpt} is where this run keeps its checkpoints, but it holds something slimlm did not "
                          "write; move it away or choose another --out.")
    if ckpt.exists() and not resume and checkpoint_every:
        raise ConfigError(f"{ckpt} holds a checkpoint of an earlier run; pass --resume to continue it, "
                          "or delete it to start over.")
    return ckpt


def init_distributed() -> int:
    """Join the process group that ``torchrun`` / ``accelerate launch`` describe in the environment; return the rank.

    NCCL when this process has a GPU, gloo otherwise. Without ``WORLD_SIZE`` > 1 nothing happens (rank 0).
    """
    import os

    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.get_rank() if dist.is_initialized() else 0
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return dist.get_rank()


def pick_device(device: str):
    import os

    import torch

    if device == "auto":
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def parse_layer_map(text: str | None) -> list[tuple[int, int]] | None:
    from slimlm.errors import ConfigError

    if not text:
        return None
    pairs = []
    for item in text.split(","):
        s, sep, t = item.partition(":")
        if not sep or not s.strip().isdigit() or not t.strip().isdigit():
            raise ConfigError(f"--layer-map item {item!r} is not STUDENT:TEACHER (for example 0:1,1:3).")
        pairs.append((int(s), int(t)))
    return pairs


def make_config(**fields):
    """Build a `DistillConfig`, turning validation errors into one `ConfigError` naming each field."""
    from pydantic import ValidationError

    from slimlm.distill import DistillConfig
    from slimlm.errors import ConfigError

    try:
        return DistillConfig(**fields)
    except ValidationError as exc:
        parts = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            parts.append(f"--{loc.replace('_', '-')}: {msg}" if loc else msg)
        raise ConfigError(f"invalid distillation settings: {'; '.join(parts)}.") from None


def final_eval(model, corpus, tokens: int) -> dict:
    from slimlm.evaluate import evaluate

    seq = min(512, model.adapter.max_positions or 512)
    res = evaluate(model, corpus, seq_len=seq, max_tokens=tokens, max_examples=512)
    return {k: res.get(k) for k in ("perplexity", "accuracy", "f1", "ece", "tokens", "examples") if res.get(k) is not None}


def print_result(title: str, res: dict) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("out", "params_before", "params_after", "steps", "tokens", "seconds"):
        table.add_row(key, fmt(res.get(key)))
    for k, v in (res.get("final_losses") or {}).items():
        table.add_row(f"final {k}", fmt(v))
    for k, v in (res.get("eval") or {}).items():
        table.add_row(f"eval {k}", fmt(v))
    out.print(table)
    curve = res.get("eval_curve") or []
    if curve:
        metric = "perplexity" if "perplexity" in curve[0] else "accuracy"
        out.print("eval curve: " + ", ".join(f"{e['step']}: {fmt(e[metric])}" for e in curve), highlight=False)


def distill_command(
    student: str = typer.Argument(..., help="Student model: a pruned variant directory, builtin:/tiny: spec."),
    teacher: str | None = typer.Option(None, "--teacher", help="Teacher model (frozen). Needed unless --loss ce."),
    data: str = typer.Option("shakespeare", "--data", help="Training data spec (its train split); eval split for curves."),
    out_dir: Path = typer.Option(..., "--out", help="Output directory for the trained student."),
    steps: int = typer.Option(100, "--steps", help="Optimizer steps (in all phases together for --schedule)."),
    loss: str = typer.Option("kl", "--loss", help="kl (forward), reverse-kl, jsd, topk, or ce (fine-tune only)."),
    alpha: float = typer.Option(0.0, "--alpha", help="Hard-label CE weight: L = alpha*CE + (1-alpha)*KD."),
    temperature: float = typer.Option(1.0, "--temperature", help="Softening temperature T (loss scaled by T^2)."),
    beta: float = typer.Option(0.5, "--beta", help="JSD weight between forward (0) and reverse (1) KL."),
    top_k: int = typer.Option(64, "--top-k", help="Teacher logits kept per position for --loss topk."),
    cache_teacher: bool = typer.Option(False, "--cache-teacher", help="Cache the teacher's top-k logits on disk (--loss topk)."),
    hidden_weight: float = typer.Option(0.0, "--hidden-weight", help="Weight of hidden-state transfer."),
    hidden_loss: str = typer.Option("cosine", "--hidden-loss", help="cosine or mse."),
    layer_map: str | None = typer.Option(None, "--layer-map", help="STUDENT:TEACHER layer pairs, e.g. 0:0,1:2 (default: from pruning provenance)."),
    attention_weight: float = typer.Option(0.0, "--attention-weight", help="Weight of last-layer attention transfer."),
    relation_weight: float = typer.Option(0.0, "--relation-weight", help="Weight of sample-relation transfer."),
    lr: float = typer.Option(3e-4, "--lr", help="Peak learning rate (AdamW)."),
    warmup: int = typer.Option(0, "--warmup", help="Linear warm-up steps before the cosine decay."),
    batch_size: int = typer.Option(4, "--batch-size", help="Sequences per micro-batch and process."),
    seq_len: int = typer.Option(256, "--seq-len", help="Tokens per training sequence."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-batches per optimizer step."),
    eval_every: int = typer.Option(0, "--eval-every", help="Evaluate every N steps (0: only at the end)."),
    eval_tokens: int = typer.Option(4096, "--eval-tokens", help="Perplexity budget of each evaluation."),
    patience: int = typer.Option(0, "--patience", help="Stop after N evaluations without improvement (0: never)."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Write a resumable checkpoint every N steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT.checkpoint."),
    schedule: str | None = typer.Option(None, "--schedule", help="iterative:steps=N alternates pruning and distillation."),
    prune: str | None = typer.Option(None, "--prune", help="Pruning target for --schedule, e.g. layers=10,ffn=0.35."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto (GPU of this rank if any, else CPU), cpu, cuda:0."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier slimlm variant at --out."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Distil TEACHER into STUDENT on --data; save the student to --out with its provenance."""
    from slimlm.data import load_data
    from slimlm.distill import distill_run
    from slimlm.distill.schedules import parse_schedule, prune_distill
    from slimlm.errors import ConfigError
    from slimlm.models import load, save

    sched = parse_schedule(schedule)
    if sched is not None and not prune:
        raise ConfigError("--schedule iterative needs a pruning target; add --prune layers=N,ffn=F.")
    if prune and sched is None:
        raise ConfigError("--prune is the target of an iterative schedule; add --schedule iterative:steps=3 "
                          "(or prune first with slimlm prune).")
    if sched is not None and checkpoint_every:
        raise ConfigError("--checkpoint-every is not supported with --schedule yet; run without it.")
    cfg = make_config(loss=loss, alpha=1.0 if loss == "ce" else alpha, temperature=temperature, beta=beta,
                      top_k=top_k, cache_teacher=cache_teacher, hidden_weight=hidden_weight, hidden_loss=hidden_loss,
                      layer_map=parse_layer_map(layer_map), attention_weight=attention_weight,
                      relation_weight=relation_weight, steps=steps, lr=lr, warmup_steps=warmup, batch_size=batch_size,
                      seq_len=seq_len, grad_accum=grad_accum, eval_every=eval_every, eval_tokens=eval_tokens,
                      patience=patience, checkpoint_every=checkpoint_every, seed=seed)
    prune_cfg = None
    if prune:
        from slimlm.prune import parse_structured

        prune_cfg = parse_structured(prune)
    if cfg.uses_teacher_outputs and not teacher:
        raise ConfigError(f"--loss {loss} needs --teacher MODEL (or use --loss ce to fine-tune without one).")
    from slimlm._io import check_out

    out_dir = check_out(out_dir, force=force, kind="variant")
    ckpt = checkpoint_dir_for(out_dir, resume, checkpoint_every)
    corpus = load_data(data)  # validate data before loading any weights
    num_labels = len(corpus.labels) if corpus.labels else None
    s = load_classifier(student, num_labels) if _is_encoder(student, num_labels) else load(student, progress=status)
    t = load(teacher, progress=status, num_labels=None) if teacher else None
    params_before = s.num_params()
    rank = init_distributed()
    dev = pick_device(device)
    s.hf.to(dev)
    if t is not None:
        t.hf.to(dev)
    start = time.perf_counter()
    with train_bar(not as_json and rank == 0, "distill") as (progress, on_metrics):
        if sched is not None:
            s, records = prune_distill(s, t, corpus, prune_cfg, cfg, sched, progress=progress, on_metrics=on_metrics)
            summary = {"steps": sum(r["distill"]["steps"] for r in records),
                       "tokens": sum(r["distill"]["tokens"] for r in records),
                       "final_losses": records[-1]["distill"]["final_losses"],
                       "eval_curve": [e for r in records for e in r["distill"]["eval_curve"]],
                       "cycles": [{k: v for k, v in r.items() if k != "distill"} for r in records]}
        else:
            res = distill_run(s, t, corpus, cfg, checkpoint_dir=ckpt, resume=resume, progress=progress,
                              on_metrics=on_metrics)
            summary = res.summary()
    if rank != 0:
        return  # rank 0 holds the same weights and writes the result
    s.hf.to("cpu")
    final = final_eval(s, corpus, eval_tokens)
    stage = {"kind": "distill", "config": cfg.model_dump(mode="json"),
             "teacher": {"spec": teacher, "hash": t.hash if t else None}, "data": data,
             "schedule": sched.model_dump() if sched else None,
             "prune": prune_cfg.model_dump(mode="json") if prune_cfg else None,
             "result": {k: v for k, v in summary.items() if k != "eval_curve"}}
    save(s, out_dir, stage=stage, metrics={"eval": final})
    if ckpt.exists():
        shutil.rmtree(ckpt)  # the run finished; the saved student supersedes its checkpoint
    result = {"out": str(out_dir), "params_before": params_before, "params_after": s.num_params(),
              "seconds": round(time.perf_counter() - start, 2), **summary, "eval": final}
    if as_json:
        emit_json(result)
    else:
        print_result(f"distill {student} <- {teacher}", result)


def load_classifier(spec: str, num_labels: int):
    """``load(spec, num_labels=K)``; tiny specs take their head size as the ``labels`` option instead."""
    from slimlm.models import load

    if spec.startswith("tiny:bert") and "labels=" not in spec:
        spec = f"{spec}{'&' if '?' in spec else '?'}labels={num_labels}"
        return load(spec)
    return load(spec, progress=status, num_labels=num_labels)


def _is_encoder(spec: str, num_labels: int | None) -> bool:
    """Labelled data and a BERT-family student: load it with a classification head (new if absent)."""
    if not num_labels:
        return False
    if spec.startswith("tiny:bert") or spec == "builtin:minilm-l6":
        return True
    cfg = Path(spec) / "config.json"
    if cfg.is_file():
        import json

        return json.loads(cfg.read_text()).get("model_type") == "bert"
    return False
