"""`slimlm report`: render a run directory into report.html and decision.md, and print the choice."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from slimlm.cli import _options as O
from slimlm.cli._out import emit_json, fmt, out


def report_command(
    run_dir: str = typer.Argument(..., metavar="RUN_DIR", help="Run directory written by `slimlm compress` or `slimlm search`."),
    traffic: float = typer.Option(100_000, "--traffic", min=0.0, help="Requests per day, for cost and CO2e."),
    price_per_hour: float = typer.Option(0.10, "--price-per-hour", min=0.0, help="USD per machine-hour."),
    grid: float = typer.Option(475.0, "--grid-gco2-per-kwh", min=0.0, help="Grid carbon intensity (g CO2e per kWh)."),
    tier: str | None = typer.Option(None, "--tier", help="Quality tier: critical (0.5%), high (1%), medium (3%)."),
    max_drop: str | None = typer.Option(None, "--max-drop", help="Quality bar overriding --tier: 2% or 0.02."),
    max_ood_drop: str | None = O.MAX_OOD_DROP,
    objective: str | None = typer.Option(None, "--objective", help="latency | size | memory | energy."),
    max_latency_ms: float | None = typer.Option(None, "--max-latency-ms", min=0.0, help="p50 latency SLO (ms)."),
    max_memory_mb: float | None = typer.Option(None, "--max-memory-mb", min=0.0, help="Peak memory SLO (MB)."),
    track: str | None = typer.Option(None, "--track", help="Log the run and every variant to a tracker: mlflow (pip install 'slimlm[track]')."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="Tracker URI (default: $MLFLOW_TRACKING_URI, else sqlite in the run dir)."),
    force: bool = typer.Option(False, "--force", help="Replace report.html / decision.md even if edited since "
                               "slimlm wrote them."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Write report.html (Pareto plots, comparison, business figures) and decision.md; print the choice."""
    from slimlm.cli._runs import tracking_line
    from slimlm.report import load_run, write_report
    from slimlm.workflows import Tracking

    tracker = Tracking(track, tracking_uri)
    tracker.check()
    res = write_report(run_dir, traffic_per_day=traffic, price_per_hour=price_per_hour, grid_gco2_per_kwh=grid,
                       tier=tier, max_drop=max_drop, objective=objective, max_latency_ms=max_latency_ms,
                       max_memory_mb=max_memory_mb, max_ood_drop=max_ood_drop, force=force)
    tracking = tracker.log(Path(run_dir), res)
    if as_json:
        emit_json({k: res[k] for k in ("report", "decision", "selected", "met", "frontier", "hypervolume")}
                  | {"closest": res["closest"], "rule": res["rule"], "guard": res["guard"],
                     "excluded_by_guard": res["excluded_by_guard"], "runtime": res["runtime"],
                     "warnings": res["warnings"]} | ({"tracking": tracking} if tracking else {}))
        return
    run = load_run(run_dir)
    point = res["selected"] or res["closest"]
    table = Table(title=f"{len(run.variants)} variants in {run_dir}")
    for col, just in (("", "left"), ("variant", "left"), ("id", "left"), ("quality drop", "right"),
                      ("p50 ms", "right"), ("disk MB", "right"), ("USD/month", "right")):
        table.add_column(col, justify=just)
    for v in run.variants:
        m = v.metrics
        mark = ("★ " if v.id == point else "") + ("◆" if v.id in res["frontier"] else "")
        drop = m.quality_drop
        usd = (res["business"].get(v.id) or {}).get("usd_per_month")
        table.add_row(mark, "baseline" if v.is_baseline else str(v.label or v.id), v.id,
                      f"{drop * 100:+.2f}%" if drop is not None else "-", fmt(m.latency_p50_ms),
                      fmt(m.disk_mb), fmt(usd))
    out.print(table)
    out.print("★ operating point" + ("" if res["met"] else " (closest: nothing meets the bar)") + "   ◆ frontier")
    verdict = "[bold green]met[/bold green]" if res["met"] else "[bold red]NOT met[/bold red]"
    out.print(f"Rule: {res['rule']}: {verdict}. {res['reason']}", highlight=False)
    out.print(res["guard"], highlight=False)
    rt = res["runtime"]
    out.print(f"Latency measured on {rt['label']}" + (f", {rt['threads']} thread(s)" if rt.get("threads") else ""),
              highlight=False)
    for w in res["warnings"]:
        out.print(f"[yellow]warning: {w}[/yellow]", highlight=False)
    out.print(f"Report: {res['report']}\nDecision: {res['decision']}", highlight=False)
    if tracking:
        out.print(tracking_line(tracking), highlight=False)
