"""`slimlm search`: a multi-objective study over recipe parameters; frontier, operating point, report."""

from __future__ import annotations

from pathlib import Path

import typer

from slimlm.cli._out import emit_json, out, progress_bars, status


def search_command(
    model: str = typer.Argument(..., help="Model spec of the baseline (the teacher)."),
    out_dir: Path = typer.Option(..., "--out", help="Run directory, shared by every worker of the study."),
    space: str = typer.Option("builtin", "--space", help="Search space YAML file, or 'builtin'."),
    trials: int = typer.Option(12, "--trials", min=1, help="Complete trials wanted, across all workers."),
    objectives: str = typer.Option("latency", "--objectives", help="Costs besides quality: latency,size,memory,energy."),
    storage: str | None = typer.Option(None, "--storage", help="SQLAlchemy URL (default: sqlite in --out)."),
    study: str = typer.Option("slimlm", "--study", help="Study name to create or join."),
    timeout: str | None = typer.Option(None, "--timeout", help="Stop starting trials after e.g. 30m; best so far is kept."),
    data: str = typer.Option("shakespeare", "--data", help="Data for calibration, training and evaluation."),
    ood_data: str = typer.Option("pydoc", "--ood-data", help="Out-of-domain data ('none': skip)."),
    eval_tokens: int = typer.Option(4096, "--eval-tokens", min=16, help="Perplexity token budget per variant and corpus."),
    shapes: str = typer.Option("1x128", "--shapes", help="Prefill shapes to profile; the first is primary."),
    decode_tokens: int = typer.Option(16, "--decode-tokens", min=0, help="Decode tokens per profile run."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed runs per shape and variant."),
    tier: str | None = typer.Option(None, "--tier", help="critical (<0.5%), high (<1%) or medium (<3%)."),
    max_drop: str | None = typer.Option(None, "--max-drop", help="Quality bar instead of a tier, e.g. 1%."),
    objective: str = typer.Option("latency", "--objective", help="What the operating point minimises."),
    max_latency_ms: float | None = typer.Option(None, "--max-latency-ms", min=0.0, help="p50 latency SLO."),
    max_memory_mb: float | None = typer.Option(None, "--max-memory-mb", min=0.0, help="Peak memory SLO."),
    traffic: float = typer.Option(100_000, "--traffic", min=0.0, help="Requests per day, for the business figures."),
    price_per_hour: float = typer.Option(0.10, "--price-per-hour", min=0.0, help="USD per machine-hour."),
    grid: float = typer.Option(475.0, "--grid-gco2-per-kwh", min=0.0, help="Grid carbon intensity."),
    seed: int = typer.Option(0, "--seed", help="Sampler seed."),
    expand: str = typer.Option("quantize", "--expand", help="After each trial, queue its siblings that differ only in "
                               "these keys (reusing its cached stages); 'none' turns it off."),
    track: str | None = typer.Option(None, "--track", help="Also log every variant to a tracker: mlflow (pip install 'slimlm[track]')."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="Tracker URI (default: $MLFLOW_TRACKING_URI, else sqlite in the run dir)."),
    force: bool = typer.Option(False, "--force", help="Start over: discard an earlier run at --out (its cache too)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Search prune → distill → quantize recipes for the Pareto frontier of quality against cost."""
    from slimlm._io import remove_on_error
    from slimlm.cli._runs import (
        check_tracking,
        finish,
        load_variants,
        prepare_run_dir,
        selection_settings,
        track_run,
        tracking_line,
        variants_table,
    )
    from slimlm.profile import parse_shapes
    from slimlm.recipes.pipeline import RunOptions
    from slimlm.search import load_space, parse_duration, search

    check_tracking(track, tracking_uri)
    settings = selection_settings(tier, max_drop, objective, max_latency_ms, max_memory_mb)
    sp = load_space(space)
    expand_keys = _expand_keys(expand, sp)
    timeout_s = parse_duration(timeout)
    objs = tuple(o.strip() for o in objectives.split(",") if o.strip())
    out_dir = prepare_run_dir(out_dir, force)
    opts = RunOptions(data=data, ood_data=None if ood_data == "none" else ood_data, eval_tokens=eval_tokens,
                      shapes=parse_shapes(shapes), decode_tokens=decode_tokens, repeats=repeats)
    log = (lambda msg: None) if as_json else status

    def after(p) -> None:  # anytime: a report of the best so far after every trial
        p.write_state([], extra={"selection": settings})
        finish(out_dir, settings, traffic, price_per_hour, grid)

    with remove_on_error(out_dir, keep=lambda: (out_dir / "variants.jsonl").exists()), progress_bars(not as_json) as bar:
        res = search(model, sp, out_dir, trials=trials, objectives=objs, storage=storage, study_name=study,
                     timeout_s=timeout_s, options=opts, seed=seed, progress=bar, log=log, after_trial=after,
                     expand=expand_keys)
    rep = finish(out_dir, settings, traffic, price_per_hour, grid)
    tracking = track_run(out_dir, track, tracking_uri, rep)
    variants = load_variants(out_dir)
    if as_json:
        emit_json({"out": str(out_dir), "variants": variants, "frontier": rep["frontier"],
                   "selected": rep["selected"], "met": rep["met"], "closest": rep["closest"], "rule": rep["rule"],
                   "hypervolume": rep["hypervolume"], "study": res, "report": rep["report"],
                   "decision": rep["decision"]} | ({"tracking": tracking} if tracking else {}))
        return
    out.print(variants_table(variants, rep["frontier"], rep["selected"], f"search of {model}: "
                             f"{res['completed']} trials ({res['ran_here']} here)"))
    out.print(f"★ selected: {rep['selected'] or '-'}  ◆ frontier; hypervolume {rep['hypervolume'] or 0:.3f} — "
              f"{'meets' if rep['met'] else 'NOTHING meets'} the bar: {rep['rule']}")
    out.print(f"report: {rep['report']}\ndecision record: {rep['decision']}")
    if tracking:
        out.print(tracking_line(tracking), highlight=False)


def _expand_keys(value: str, sp) -> tuple[str, ...]:
    from slimlm.errors import ConfigError

    keys = tuple(k.strip() for k in value.split(",") if k.strip() and k.strip() != "none")
    bad = [k for k in keys if k not in sp.choices]
    if bad:
        raise ConfigError(f"--expand {','.join(bad)}: not a choice of space {sp.name}; use some of "
                          f"{', '.join(sp.choices)} or none.")
    return keys
