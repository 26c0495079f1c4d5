"""`slimlm distill`: train a (pruned) student to imitate a teacher; also iterative prune-distill cycles.

The job itself is `slimlm.distill.job.distill_job`; this module parses, shows progress and prints. Shared
with `slimlm finetune`: the progress bar (loss, learning rate, tokens/s, ETA), the config builder whose
errors name the flags, and the result table.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from slimlm.cli import _options as O
from slimlm.cli._out import emit_json, err, fmt, out, status


@contextmanager
def train_bar(enabled: bool, title: str, lines: bool = False) -> Iterator[tuple]:
    """Yield ``(progress, on_metrics)``: one rich bar with loss / lr / tok/s / ETA, or log lines on stderr
    without a tty or with ``lines`` (``--json``: stdout is the JSON document, progress still shows)."""
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
    if lines or (not err.is_terminal and not _force()):
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


# `DistillConfig` fields whose command-line option has another name than ``--field-name``
OPTION_NAMES = {"warmup_steps": "--warmup"}


def _option(field: str) -> str:
    return OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


def make_config(**fields):
    """Build a `DistillConfig`, turning validation errors into one `ConfigError` naming each field by the option
    the user typed (``--warmup``, not the field ``warmup_steps`` it fills)."""
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
            if not loc:  # a rule over several fields names them as fields: name the options instead
                for name, option in OPTION_NAMES.items():
                    msg = re.sub(rf"\b{name}\b", option, msg)
            parts.append(f"{_option(loc)}: {msg}" if loc else msg)
        raise ConfigError(f"invalid distillation settings: {'; '.join(parts)}.") from None


def budget_message(res: dict, steps: int, what: str) -> str:
    """What a run the time budget stopped (``"finished": false``) left, and how to continue it."""
    return (f"stopped at the time budget after step {res['out_of_time']} of {steps}; no {what} written yet. The "
            f"checkpoint is in {res['checkpoint']}: run the same command with --resume to continue.")


def print_result(title: str, res: dict, steps: int, what: str = "student") -> None:
    """The result table of a distill / finetune run (``steps`` asked; ``what`` it writes), and what it means
    when the guard or the time budget stopped it."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    where = "out" if res.get("finished", True) else "checkpoint"  # stopped by the time budget: no student yet
    for key in (where, "params_before", "params_after", "steps", "tokens", "seconds"):
        table.add_row(key, fmt(res.get(key)))
    for k, v in (res.get("final_losses") or {}).items():
        table.add_row(f"final {k}", fmt(v))
    for k, v in (res.get("eval") or {}).items():
        table.add_row(f"eval {k}", fmt(v))
    out.print(table)
    if res.get("diverged"):
        out.print(f"[bold yellow]diverged:[/bold yellow] {escape(res['diverged'])}. Try a lower --lr or more --warmup.",
                  highlight=False)
    if not res.get("finished", True):
        out.print(budget_message(res, steps, what), highlight=False)
    curve = res.get("eval_curve") or []
    if curve:
        metric = "perplexity" if "perplexity" in curve[0] else "accuracy"
        out.print("eval curve: " + ", ".join(f"{e['step']}: {fmt(e[metric])}" for e in curve), highlight=False)
    for note in res.get("notes") or []:
        out.print(f"[bold yellow]note:[/bold yellow] {escape(note)}", highlight=False)


def distill_command(
    student: str = typer.Argument(..., metavar="STUDENT", help="Student model: a pruned variant directory, builtin:/tiny: spec."),
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
    general_data: str | None = typer.Option(None, "--general-data", help="Mix in this corpus's train split (e.g. "
                                            "pydoc, a `slimlm generate` folder, or several joined by '+') to keep "
                                            "general ability; needs --general-share."),
    general_share: float = typer.Option(0.0, "--general-share", help="Share of training rows from --general-data, "
                                        "in [0, 1), e.g. 0.25."),
    freeze_embeddings: bool = typer.Option(False, "--freeze-embeddings", help="Keep the token embeddings and the "
                                           "LM head fixed (no gradient, no optimizer state for them)."),
    freeze_layers: int = typer.Option(0, "--freeze-layers", help="Also keep the lowest N blocks fixed (cheaper "
                                      "steps; backward stops at block N)."),
    teacher_precision: str = typer.Option("auto", "--teacher-precision", help="auto (bfloat16 weight storage for "
                                          "teachers of 300M+ parameters), float32 or bfloat16; computed in float32."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Recompute each block's "
                                                "activations in the backward pass instead of keeping them (less "
                                                "memory, one more forward pass of the blocks, same gradients)."),
    eval_every: int = typer.Option(0, "--eval-every", help="Evaluate every N steps (0: only at the end)."),
    eval_tokens: int = typer.Option(4096, "--eval-tokens", help="Perplexity budget of each evaluation."),
    patience: int = typer.Option(0, "--patience", help="Stop after N evaluations without improvement (0: never)."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Write a resumable checkpoint every N steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT.checkpoint."),
    max_minutes: float | None = typer.Option(None, "--max-minutes", help="Time budget: past it, stop at the end of "
                                             "a step, keep OUT.checkpoint and write no student yet; the same "
                                             "command with --resume continues."),
    schedule: str | None = typer.Option(None, "--schedule", help="iterative:steps=N alternates pruning and distillation."),
    prune: str | None = typer.Option(None, "--prune", help="Pruning target for --schedule, e.g. layers=10,ffn=0.35."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto (GPU of this rank if any, else CPU), cpu, cuda:0."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier slimlm variant at --out."),
    trust_remote_code: bool = O.TRUST_REMOTE_CODE,
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Distil TEACHER into STUDENT on --data; save the student to --out with its provenance."""
    from slimlm.distill.job import distill_job
    from slimlm.distill.schedules import parse_schedule
    from slimlm.prune import parse_structured

    cfg = make_config(loss=loss, alpha=1.0 if loss == "ce" else alpha, temperature=temperature, beta=beta,
                      top_k=top_k, cache_teacher=cache_teacher, hidden_weight=hidden_weight, hidden_loss=hidden_loss,
                      layer_map=parse_layer_map(layer_map), attention_weight=attention_weight,
                      relation_weight=relation_weight, steps=steps, lr=lr, warmup_steps=warmup, batch_size=batch_size,
                      seq_len=seq_len, grad_accum=grad_accum, eval_every=eval_every, eval_tokens=eval_tokens,
                      patience=patience, checkpoint_every=checkpoint_every, seed=seed, general_data=general_data,
                      general_share=general_share, freeze_embeddings=freeze_embeddings, freeze_layers=freeze_layers,
                      teacher_precision=teacher_precision, gradient_checkpointing=gradient_checkpointing)
    sched = parse_schedule(schedule)
    first_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 shows progress
    with train_bar(first_rank, "distill", lines=as_json) as (progress, on_metrics):
        result = distill_job(student, teacher, data, out_dir, cfg, schedule=sched,
                             prune=parse_structured(prune) if prune else None, resume=resume, force=force, device=device, trust_remote_code=trust_remote_code,
                             eval_tokens=eval_tokens, progress=progress, on_metrics=on_metrics, log=status,
                             max_seconds=None if max_minutes is None else max_minutes * 60)
    if result is None:
        return  # not rank 0 of a distributed run
    if as_json:
        emit_json(result)
        return
    print_result(f"distill {student} <- {teacher}", result, steps)
