"""`slimlm compress`: run recipes, measure every variant, pick the operating point, write the report."""

from __future__ import annotations

from pathlib import Path

import typer

from slimlm.cli._out import emit_json, out, progress_bars, status


def compress_command(
    model: str = typer.Argument(..., help="Model spec of the baseline (the teacher)."),
    out_dir: Path = typer.Option(..., "--out", help="Run directory (rerun the same command to resume)."),
    recipe: list[str] = typer.Option(["quick"], "--recipe", help="Builtin recipe name or YAML file; repeatable."),
    data: str = typer.Option("shakespeare", "--data", help="Data for calibration, training and evaluation."),
    ood_data: str = typer.Option("pydoc", "--ood-data", help="Out-of-domain data to check quality on ('none': skip)."),
    eval_tokens: int = typer.Option(8192, "--eval-tokens", min=16, help="Perplexity token budget per variant and corpus."),
    seq_len: int = typer.Option(512, "--seq-len", min=2, help="Perplexity window."),
    shapes: str = typer.Option("1x128,8x128", "--shapes", help="Prefill shapes to profile; the first is primary."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed runs per shape and variant."),
    profile: bool = typer.Option(True, "--profile/--no-profile", help="Profile the variants (latency, memory)."),
    tier: str | None = typer.Option(None, "--tier", help="critical (<0.5%), high (<1%) or medium (<3%) drop."),
    max_drop: str | None = typer.Option(None, "--max-drop", help="Quality bar instead of a tier, e.g. 2% or 0.02."),
    objective: str = typer.Option("latency", "--objective", help="What the operating point minimises: latency, size, memory, energy."),
    max_latency_ms: float | None = typer.Option(None, "--max-latency-ms", min=0.0, help="p50 latency SLO at the primary shape."),
    max_memory_mb: float | None = typer.Option(None, "--max-memory-mb", min=0.0, help="Peak memory SLO."),
    traffic: float = typer.Option(100_000, "--traffic", min=0.0, help="Requests per day, for the business figures."),
    price_per_hour: float = typer.Option(0.10, "--price-per-hour", min=0.0, help="USD per machine-hour."),
    grid: float = typer.Option(475.0, "--grid-gco2-per-kwh", min=0.0, help="Grid carbon intensity."),
    resume: bool = typer.Option(False, "--resume", help="Resume a run (rerunning the same command does the same)."),
    track: str | None = typer.Option(None, "--track", help="Also log every variant to a tracker: mlflow (pip install 'slimlm[track]')."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="Tracker URI (default: $MLFLOW_TRACKING_URI, else sqlite in the run dir)."),
    force: bool = typer.Option(False, "--force", help="Start over: discard an earlier run at --out (its cache too)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Run compression recipes on MODEL; evaluate and profile every variant; select and report."""
    from slimlm._io import remove_on_error
    from slimlm.cli._runs import (
        check_tracking,
        finish,
        has_stage_output,
        load_variants,
        prepare_run_dir,
        selection_settings,
        track_run,
        tracking_line,
        variants_table,
    )
    from slimlm.profile import parse_shapes
    from slimlm.recipes import load_recipe
    from slimlm.recipes.pipeline import RunOptions, compress

    check_tracking(track, tracking_uri)
    settings = selection_settings(tier, max_drop, objective, max_latency_ms, max_memory_mb)
    recipes = [load_recipe(r) for r in recipe]  # validate everything before any heavy work
    out_dir = prepare_run_dir(out_dir, force)
    opts = RunOptions(data=data, ood_data=None if ood_data == "none" else ood_data, eval_tokens=eval_tokens,
                      seq_len=seq_len, shapes=parse_shapes(shapes), repeats=repeats, profile=profile)
    log = (lambda msg: None) if as_json else status
    with remove_on_error(out_dir, keep=lambda: has_stage_output(out_dir)), progress_bars(not as_json) as bar:
        p = compress(model, recipes, out_dir, opts, progress=bar, log=log)
    p.write_state([r.name for r in recipes], extra={"selection": settings})
    rep = finish(out_dir, settings, traffic, price_per_hour, grid)
    tracking = track_run(out_dir, track, tracking_uri, rep)
    variants = load_variants(out_dir)
    if as_json:
        emit_json({"out": str(out_dir), "variants": variants, "frontier": rep["frontier"],
                   "selected": rep["selected"], "met": rep["met"], "closest": rep["closest"], "rule": rep["rule"],
                   "hypervolume": rep["hypervolume"], "report": rep["report"], "decision": rep["decision"]}
                  | ({"tracking": tracking} if tracking else {}))
        return
    out.print(variants_table(variants, rep["frontier"], rep["selected"], f"variants of {model} ({out_dir})"))
    verdict = "meets" if rep["met"] else "NOTHING meets"
    out.print(f"★ selected: {rep['selected'] or '-'}  ◆ frontier  — {verdict} the bar: {rep['rule']}")
    if not rep["met"]:
        out.print(f"[yellow]{rep['reason']}[/yellow]")
    out.print(f"report: {rep['report']}\ndecision record: {rep['decision']}")
    if tracking:
        out.print(tracking_line(tracking), highlight=False)
