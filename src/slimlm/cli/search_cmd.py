"""`slimlm search`: a multi-objective study over recipe parameters; frontier, operating point, report."""

from __future__ import annotations

from pathlib import Path

import typer

from slimlm.cli import _options as O
from slimlm.cli._out import progress_bars, status


def search_command(
    model: str = typer.Argument(..., metavar="MODEL", help="Model spec of the baseline (the teacher)."),
    out_dir: Path = typer.Option(..., "--out", help="Run directory, shared by every worker of the study."),
    space: str = typer.Option("builtin", "--space", help="Search space YAML file, or 'builtin'."),
    trials: int = typer.Option(12, "--trials", min=1, help="Complete trials wanted, across all workers."),
    objectives: str | None = typer.Option(None, "--objectives", help="Costs besides quality: latency,size,memory,"
                                          "energy (default latency; size with --no-profile)."),
    storage: str | None = typer.Option(None, "--storage", help="SQLAlchemy URL (default: sqlite in --out)."),
    study: str = typer.Option("slimlm", "--study", help="Study name to create or join."),
    timeout: str | None = typer.Option(None, "--timeout", help="Stop starting trials after e.g. 30m; best so far is kept."),
    data: str = O.DATA,
    ood_data: str = O.OOD_DATA,
    eval_tokens: int = typer.Option(4096, "--eval-tokens", min=16, help="Perplexity token budget per variant and corpus."),
    shapes: str = typer.Option("1x128", "--shapes", help="Prefill shapes to profile; the first is primary."),
    decode_tokens: int = typer.Option(16, "--decode-tokens", min=0, help="Decode tokens per profile run."),
    repeats: int = O.REPEATS,
    runtime: str = O.RUNTIME,
    threads: int | None = O.THREADS,
    profile: bool = typer.Option(True, "--profile/--no-profile", help="Profile the variants (latency, memory); "
                                 "off: only quality and size are measured (objectives size)."),
    tier: str | None = O.TIER,
    max_drop: str | None = O.MAX_DROP,
    max_ood_drop: str | None = O.MAX_OOD_DROP,
    objective: str | None = O.RUN_OBJECTIVE,
    max_latency_ms: float | None = O.MAX_LATENCY_MS,
    max_memory_mb: float | None = O.MAX_MEMORY_MB,
    traffic: float = O.TRAFFIC,
    price_per_hour: float = O.PRICE,
    grid: float = O.GRID,
    seed: int = typer.Option(0, "--seed", help="Sampler seed."),
    expand: str = typer.Option("quantize", "--expand", help="After each trial, queue its siblings that differ only in "
                               "these keys (reusing its cached stages); 'none' turns it off."),
    track: str | None = O.TRACK,
    tracking_uri: str | None = O.TRACKING_URI,
    heartbeat: int = typer.Option(10, "--heartbeat", min=1, help="Seconds between this worker's heartbeats; a "
                                  "trial silent for 3x this (its worker died) is failed and retried once."),
    force: bool = O.FORCE_RUN,
    trust_remote_code: bool = O.TRUST_REMOTE_CODE,
    as_json: bool = O.JSON,
) -> None:
    """Search prune → distill → quantize recipes for the Pareto frontier of quality against cost."""
    from slimlm.profile import parse_shapes
    from slimlm.recipes.pipeline import RunOptions
    from slimlm.workflows import search

    opts = RunOptions(trust_remote_code=trust_remote_code, data=data, ood_data=None if ood_data == "none" else ood_data, eval_tokens=eval_tokens,
                      shapes=parse_shapes(shapes), decode_tokens=decode_tokens, repeats=repeats,
                      profile=profile, runtime=runtime, threads=threads)
    kw = O.run_settings(tier, max_drop, objective, max_latency_ms, max_memory_mb, traffic, price_per_hour, grid,
                        track, tracking_uri, max_ood_drop, profile=profile)
    objectives = objectives if objectives is not None else ("latency" if profile else "size")
    objs = tuple(o.strip() for o in objectives.split(",") if o.strip())
    with progress_bars(not as_json) as bar:
        res = search(model, space, out_dir, opts, trials=trials, objectives=objs, storage=storage, study=study,
                     timeout=timeout, seed=seed, expand=expand, progress=bar,
                     log=(lambda msg: None) if as_json else status, heartbeat_s=heartbeat, force=force, **kw)
    O.print_run(res, f"search of {model}: {res.study['completed']} trials ({res.study['ran_here']} here)", as_json)
