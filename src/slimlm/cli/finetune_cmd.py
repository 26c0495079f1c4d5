"""`slimlm finetune`: give an encoder a classification head trained on labelled data (hard labels, no teacher)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import typer

from slimlm.cli._out import emit_json
from slimlm.cli.distill_cmd import (
    checkpoint_dir_for,
    final_eval,
    load_classifier,
    make_config,
    print_result,
    train_bar,
)


def finetune_command(
    model: str = typer.Argument(..., help="Encoder: builtin:minilm-l6, tiny:bert, or a directory."),
    data: str = typer.Option("shakespeare-genre", "--data", help="Labelled data: shakespeare-genre or .jsonl/.csv with labels."),
    out_dir: Path = typer.Option(..., "--out", help="Output directory for the fine-tuned classifier."),
    steps: int = typer.Option(150, "--steps", help="Optimizer steps."),
    lr: float = typer.Option(2e-4, "--lr", help="Peak learning rate (AdamW)."),
    warmup: int = typer.Option(15, "--warmup", help="Linear warm-up steps before the cosine decay."),
    batch_size: int = typer.Option(16, "--batch-size", help="Examples per micro-batch and process."),
    seq_len: int = typer.Option(128, "--seq-len", help="Truncation length in tokens."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-batches per optimizer step."),
    eval_every: int = typer.Option(0, "--eval-every", help="Evaluate every N steps (0: only at the end)."),
    patience: int = typer.Option(0, "--patience", help="Stop after N evaluations without improvement (0: never)."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Write a resumable checkpoint every N steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT.checkpoint."),
    seed: int = typer.Option(0, "--seed"),
    force: bool = typer.Option(False, "--force", help="Replace an earlier slimlm variant at --out."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Fine-tune MODEL's classification head (and encoder) on --data; report accuracy and macro-F1."""
    from slimlm.data import load_data
    from slimlm.distill.finetune import finetune
    from slimlm.errors import DataError
    from slimlm.models import save

    cfg = make_config(loss="ce", alpha=1.0, steps=steps, lr=lr, warmup_steps=min(warmup, steps - 1),
                      batch_size=batch_size, seq_len=seq_len, grad_accum=grad_accum, eval_every=eval_every,
                      patience=patience, checkpoint_every=checkpoint_every, seed=seed)
    from slimlm._io import check_out

    out_dir = check_out(out_dir, force=force, kind="variant")
    ckpt = checkpoint_dir_for(out_dir, resume, checkpoint_every)
    corpus = load_data(data)
    if not corpus.labels:
        raise DataError(f"data {data!r} has no labels; finetune needs labelled data (shakespeare-genre, or a "
                        ".jsonl/.csv with a label field).")
    m = load_classifier(model, len(corpus.labels))
    params_before = m.num_params()
    start = time.perf_counter()
    with train_bar(not as_json, "finetune") as (progress, on_metrics):
        res = finetune(m, corpus, cfg, checkpoint_dir=ckpt, resume=resume, progress=progress, on_metrics=on_metrics)
        final = final_eval(m, corpus, 4096)
    summary = res.summary()
    stage = {"kind": "finetune", "config": cfg.model_dump(mode="json"), "data": data, "labels": corpus.labels,
             "result": {k: v for k, v in summary.items() if k != "eval_curve"}}
    m.hf.config.id2label = dict(enumerate(corpus.labels))
    m.hf.config.label2id = {v: k for k, v in m.hf.config.id2label.items()}
    save(m, out_dir, stage=stage, metrics={"eval": final})
    if ckpt.exists():
        shutil.rmtree(ckpt)
    result = {"out": str(out_dir), "params_before": params_before, "params_after": m.num_params(),
              "seconds": round(time.perf_counter() - start, 2), **summary, "eval": final}
    if as_json:
        emit_json(result)
    else:
        print_result(f"finetune {model} on {data}", result)
