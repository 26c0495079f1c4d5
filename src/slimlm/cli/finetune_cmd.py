"""`slimlm finetune`: give an encoder a classification head trained on labelled data (hard labels, no teacher)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from slimlm.cli import _options as O
from slimlm.cli._out import emit_json
from slimlm.cli.distill_cmd import make_config, print_result, train_bar


def _decoder_family(spec: str) -> str | None:
    """The decoder family ``spec`` names, told without building the model (None: an encoder, or a spec this
    cannot tell, such as a hub id, which loading then judges). Loading a decoder for finetune used to fail
    inside the loader, on the ``labels`` option it appends for the head (``tiny:llama?labels=6``), an option
    the user never typed."""
    from slimlm.models.adapters import CAUSAL_TYPES
    from slimlm.models.loading import BUILTIN_TYPES
    from slimlm.models.tiny import KINDS as TINY_KINDS

    if spec.startswith("tiny:"):
        kind = spec.split(":", 1)[1].partition("?")[0]
        return kind if kind in TINY_KINDS and kind != "bert" else None
    if spec.startswith("builtin:"):
        model_type = BUILTIN_TYPES.get(spec.split(":", 1)[1])
        return model_type if model_type in CAUSAL_TYPES else None
    path = Path(spec).expanduser()
    if spec.endswith(".gguf") and path.is_file():
        return "GGUF"  # slimlm reads GGUF files as causal LMs only
    try:
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None  # no readable config: loading says what is wrong with the directory
    return model_type if model_type in CAUSAL_TYPES else None


def finetune_command(
    model: str = typer.Argument(..., metavar="MODEL", help="Encoder: builtin:minilm-l6, tiny:bert, or a directory."),
    data: str = typer.Option("shakespeare-genre", "--data", help="Labelled data: shakespeare-genre, rotten-tomatoes or .jsonl/.csv with labels."),
    out_dir: Path = typer.Option(..., "--out", help="Output directory for the fine-tuned classifier."),
    steps: int = typer.Option(150, "--steps", min=1, help="Optimizer steps."),
    lr: float = typer.Option(2e-4, "--lr", help="Peak learning rate (AdamW)."),
    warmup: int = typer.Option(15, "--warmup", help="Linear warm-up steps before the cosine decay."),
    batch_size: int = typer.Option(16, "--batch-size", help="Examples per micro-batch and process."),
    seq_len: int = typer.Option(128, "--seq-len", help="Truncation length in tokens."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-batches per optimizer step."),
    eval_every: int = typer.Option(0, "--eval-every", help="Evaluate every N steps (0: only at the end)."),
    patience: int = typer.Option(0, "--patience", help="Stop after N evaluations without improvement (0: never)."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Write a resumable checkpoint every N steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT.checkpoint."),
    max_minutes: float | None = typer.Option(None, "--max-minutes", help="Time budget: past it, stop at the end of "
                                             "a step, keep OUT.checkpoint and write no classifier yet; the same "
                                             "command with --resume continues."),
    seed: int = typer.Option(0, "--seed"),
    force: bool = typer.Option(False, "--force", help="Replace an earlier slimlm variant at --out."),
    trust_remote_code: bool = O.TRUST_REMOTE_CODE,
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Fine-tune MODEL's classification head (and encoder) on --data; report accuracy and macro-F1."""
    from slimlm.cli._out import status
    from slimlm.distill.job import finetune_job
    from slimlm.errors import SpecError

    family = _decoder_family(model)
    if family:
        raise SpecError(f"finetune trains encoder classifiers (BERT family: tiny:bert, builtin:minilm-l6 or a BERT "
                        f"directory) and {model} is a decoder ({family}); train a decoder on text with `slimlm "
                        "distill` (--loss ce needs no teacher).")
    cfg = make_config(loss="ce", alpha=1.0, steps=steps, lr=lr, warmup_steps=min(warmup, max(steps - 1, 0)),
                      batch_size=batch_size, seq_len=seq_len, grad_accum=grad_accum, eval_every=eval_every,
                      patience=patience, checkpoint_every=checkpoint_every, seed=seed)
    with train_bar(True, "finetune", lines=as_json) as (progress, on_metrics):
        result = finetune_job(model, data, out_dir, cfg, resume=resume, force=force, progress=progress,
                              trust_remote_code=trust_remote_code,
                              on_metrics=on_metrics, log=status,
                              max_seconds=None if max_minutes is None else max_minutes * 60)
    if as_json:
        emit_json(result)
        return
    print_result(f"finetune {model} on {data}", result, steps, what="classifier")
