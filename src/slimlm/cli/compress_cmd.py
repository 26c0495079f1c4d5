"""`slimlm compress`: run recipes, measure every variant, pick the operating point, write the report."""

from __future__ import annotations

from pathlib import Path

import typer

from slimlm.cli import _options as O
from slimlm.cli._out import progress_bars, status


def compress_command(
    model: str = typer.Argument(..., metavar="MODEL", help="Model spec of the baseline (the teacher)."),
    out_dir: Path = typer.Option(..., "--out", help="Run directory (rerun the same command to resume)."),
    recipe: list[str] = typer.Option(["quick"], "--recipe", help="Builtin recipe name or YAML file; repeatable."),
    data: str = O.DATA,
    ood_data: str = O.OOD_DATA,
    eval_tokens: int = typer.Option(8192, "--eval-tokens", min=16, help="Perplexity token budget per variant and corpus."),
    seq_len: int = typer.Option(512, "--seq-len", min=2, help="Perplexity window."),
    shapes: str = typer.Option("1x128,8x128", "--shapes", help="Prefill shapes to profile; the first is primary."),
    repeats: int = O.REPEATS,
    runtime: str = O.RUNTIME,
    threads: int | None = O.THREADS,
    profile: bool = typer.Option(True, "--profile/--no-profile", help="Profile the variants (latency, memory)."),
    tier: str | None = O.TIER,
    max_drop: str | None = O.MAX_DROP,
    max_ood_drop: str | None = O.MAX_OOD_DROP,
    objective: str | None = O.RUN_OBJECTIVE,
    max_latency_ms: float | None = O.MAX_LATENCY_MS,
    max_memory_mb: float | None = O.MAX_MEMORY_MB,
    traffic: float = O.TRAFFIC,
    price_per_hour: float = O.PRICE,
    grid: float = O.GRID,
    resume: bool = typer.Option(False, "--resume", help="Resume a run (rerunning the same command does the same)."),
    track: str | None = O.TRACK,
    tracking_uri: str | None = O.TRACKING_URI,
    force: bool = O.FORCE_RUN,
    trust_remote_code: bool = O.TRUST_REMOTE_CODE,
    as_json: bool = O.JSON,
) -> None:
    """Run compression recipes on MODEL; evaluate and profile every variant; select and report."""
    from slimlm.profile import parse_shapes
    from slimlm.recipes.pipeline import RunOptions
    from slimlm.workflows import compress

    opts = RunOptions(trust_remote_code=trust_remote_code, data=data, ood_data=None if ood_data == "none" else ood_data, eval_tokens=eval_tokens,
                      seq_len=seq_len, shapes=parse_shapes(shapes), repeats=repeats, profile=profile,
                      runtime=runtime, threads=threads)
    kw = O.run_settings(tier, max_drop, objective, max_latency_ms, max_memory_mb, traffic, price_per_hour, grid,
                        track, tracking_uri, max_ood_drop, profile=profile)
    with progress_bars(not as_json) as bar:
        res = compress(model, recipe, out_dir, opts, progress=bar, log=(lambda msg: None) if as_json else status,
                       force=force, **kw)
    O.print_run(res, f"variants of {model} ({out_dir})", as_json)
