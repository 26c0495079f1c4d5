"""`slimlm demo`: the main job on the embedded defaults (SmolLM2-135M on Shakespeare)."""

from __future__ import annotations

import typer
from rich.table import Table

from slimlm.cli import _options as O
from slimlm.cli._out import emit_json, fmt, out, progress_bars, status


def demo_command(
    model: str = typer.Option("builtin:smollm2-135m", "--model", help="Model spec."),
    max_tokens: int = typer.Option(8192, "--max-tokens", min=16, help="Perplexity token budget per corpus."),
    trust_remote_code: bool = O.TRUST_REMOTE_CODE,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Evaluate the model in domain (Shakespeare eval plays) and out of domain (pydoc, movie reviews), then
    profile it."""
    from slimlm.cli.profile_cmd import profile_table
    from slimlm.data import load_data
    from slimlm.evaluate import evaluate
    from slimlm.models import load
    from slimlm.profile import profile

    m = load(model, progress=status, trust_remote_code=trust_remote_code)
    quality = {}
    with progress_bars(not as_json) as bar:
        for data in ("shakespeare", "pydoc", "rotten-tomatoes"):  # in domain, then the default --ood-data
            status(f"evaluating on {data} (eval split, {max_tokens} tokens)")
            quality[data] = evaluate(m, load_data(data), max_tokens=max_tokens, progress=bar)
        status("profiling (latency, decode, peak memory, roofline)")
        prof = profile(m, progress=bar)
    if as_json:
        emit_json({"model": model, "evaluate": quality, "profile": prof})
        return
    t = Table(title=f"quality of {model}")
    t.add_column("data")
    for col in ("perplexity", "ECE", "tokens", "seconds"):
        t.add_column(col, justify="right")
    for data, q in quality.items():
        t.add_row(f"{data} (eval)", fmt(q["perplexity"]), fmt(q["ece"]), fmt(q["tokens"]), fmt(q["seconds"]))
    out.print(t)
    out.print(profile_table([prof], title=f"efficiency of {model}"))
