"""`slimlm evaluate`: quality of one model on a data spec."""

from __future__ import annotations

import typer

from slimlm.cli import _options as O
from slimlm.cli._out import emit_json, fmt, measure_table, out, progress_bars, status
from slimlm.errors import ConfigError


def evaluate_command(
    model: str = typer.Argument(..., metavar="MODEL", help="Model spec: builtin:smollm2-135m, tiny:llama, a directory, a .gguf file."),
    data: str = typer.Option("shakespeare", "--data", help="Data spec: shakespeare, shakespeare-genre, pydoc, rotten-tomatoes, a file."),
    split: str = typer.Option("eval", help="Split to score: train, calibration or eval."),
    seq_len: int = typer.Option(512, "--seq-len", min=2, help="Window length (tokens) for perplexity."),
    max_tokens: int | None = typer.Option(16384, "--max-tokens", min=0, help="Token budget for perplexity (0: all)."),
    max_examples: int | None = typer.Option(512, "--max-examples", min=0, help="Example budget for classifiers, spread evenly over the split (0: all)."),
    teacher: str | None = typer.Option(None, "--teacher", help="Also report agreement with this model."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda:0, or auto (a GPU if any). slimlm-quantized "
                               "variants run on the CPU (their kernels are CPU ones)."),
    trust_remote_code: bool = O.TRUST_REMOTE_CODE,
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Measure perplexity, calibration (ECE), teacher agreement, and accuracy / macro-F1 for classifiers."""
    from slimlm._device import pick_device
    from slimlm.data import load_data
    from slimlm.evaluate import evaluate
    from slimlm.models import load
    from slimlm.models.qlayers import describe

    dev = pick_device(device)
    corpus = load_data(data)  # validate data before loading any weights
    m = load(model, progress=status, trust_remote_code=trust_remote_code)
    t = load(teacher, progress=status, trust_remote_code=trust_remote_code) if teacher else None
    for x in (m, t):
        if x is None:
            continue
        if dev.type != "cpu" and describe(x.hf):  # slimlm's quantized layers are in it
            raise ConfigError(f"{x.spec} is slimlm-quantized, and its int8/int4 kernels run on the CPU; evaluate it "
                              "with --device cpu (or export it: slimlm export --format transformers).")
        x.hf.to(dev)
    with progress_bars(not as_json) as bar:
        res = evaluate(m, corpus, split=split, seq_len=seq_len, max_tokens=max_tokens or None,
                       max_examples=max_examples or None, teacher=t, progress=bar)
    res["device"] = str(dev)
    if as_json:
        emit_json(res)
        return
    table = measure_table(f"{model} on {data} ({split})")
    for key in ("perplexity", "accuracy", "f1", "ece", "tokens", "seq_len", "seconds"):
        if res.get(key) is not None:
            table.add_row(key, fmt(res[key]))
    for key, v in (res.get("teacher_agreement") or {}).items():
        table.add_row(f"teacher {key}", fmt(v))
    out.print(table)
