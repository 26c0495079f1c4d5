"""`slimlm decide`: record a new versioned decision in a run directory (old ones stay), or list them."""

from __future__ import annotations

import typer
from rich.table import Table

from slimlm.cli import _options as O
from slimlm.cli._out import emit_json, fmt, out
from slimlm.errors import ConfigError


def decide_command(
    run_dir: str = typer.Argument(..., metavar="RUN_DIR", help="Run directory written by `slimlm compress` or `slimlm search`."),
    tier: str | None = typer.Option(None, "--tier", help="Quality tier: critical (0.5%), high (1%), medium (3%)."),
    max_drop: str | None = typer.Option(None, "--max-drop", help="Quality bar overriding --tier: 2% or 0.02."),
    objective: str | None = typer.Option(None, "--objective", help="latency | size | memory | energy."),
    max_latency_ms: float | None = typer.Option(None, "--max-latency-ms", min=0.0, help="p50 latency SLO (ms)."),
    max_memory_mb: float | None = typer.Option(None, "--max-memory-mb", min=0.0, help="Peak memory SLO (MB)."),
    max_ood_drop: str | None = O.MAX_OOD_DROP,
    variant: str | None = typer.Option(None, "--variant", help="Pin this variant id instead of the rule's choice."),
    note: str | None = typer.Option(None, "--note", help="Why (kept in the record)."),
    traffic: float = typer.Option(100_000, "--traffic", min=0.0, help="Requests per day, for the cost forecast."),
    price_per_hour: float = typer.Option(0.10, "--price-per-hour", min=0.0, help="USD per machine-hour."),
    grid: float = typer.Option(475.0, "--grid-gco2-per-kwh", min=0.0, help="Grid carbon intensity (g CO2e per kWh)."),
    list_: bool = typer.Option(False, "--list", help="List the recorded decisions instead of recording one."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Record decision N+1 (decisions/NNNN.json; report.html and decision.md follow the rule), or --list them."""
    from slimlm.report.business import Inputs
    from slimlm.report.decisions import list_decisions, record_decision

    if list_:
        given = [flag for flag, v in (("--tier", tier), ("--max-drop", max_drop), ("--objective", objective),
                                      ("--max-latency-ms", max_latency_ms), ("--max-memory-mb", max_memory_mb),
                                      ("--max-ood-drop", max_ood_drop), ("--variant", variant), ("--note", note))
                 if v is not None]
        if given:  # they would be ignored: --list records nothing
            raise ConfigError(f"--list shows the recorded decisions and takes no rule; drop {', '.join(given)} "
                              "(or drop --list to record a decision with it).")
        recs = list_decisions(run_dir)
        if as_json:
            emit_json([{k: r.get(k) for k in ("number", "created", "selected", "tier", "max_drop", "met", "pinned",
                                              "note")} for r in recs])
            return
        table = Table(title=f"decisions in {run_dir}")
        for col in ("#", "created", "variant", "tier / bound", "met", "pinned", "note"):
            table.add_column(col)
        for r in recs:
            table.add_row(str(r["number"]), r.get("created", ""), str(r.get("selected")),
                          str(r.get("tier") or fmt(r.get("max_drop"))), "yes" if r.get("met") else "no",
                          "yes" if r.get("pinned") else "", r.get("note") or "")
        out.print(table)
        return
    rec = record_decision(run_dir, tier=tier, max_drop=max_drop, objective=objective, max_latency_ms=max_latency_ms,
                          max_memory_mb=max_memory_mb, max_ood_drop=max_ood_drop, variant=variant, note=note,
                          inputs=Inputs(traffic_per_day=traffic, price_per_hour=price_per_hour,
                                        grid_gco2_per_kwh=grid))
    if as_json:
        emit_json({k: rec.get(k) for k in ("number", "selected", "met", "tier", "max_drop", "rule", "reason",
                                           "pinned", "forecast")}
                  | {"path": f"{run_dir}/decisions/{rec['number']:04d}.json"})
        return
    verdict = "[bold green]met[/bold green]" if rec["met"] else "[bold red]NOT met[/bold red]"
    out.print(f"Decision {rec['number']}: serve {rec.get('selected') or '(nothing)'} — {rec['rule']}: {verdict}. "
              f"{rec['reason']}", highlight=False)
    fc = rec.get("forecast") or {}
    if fc.get("usd_per_1k_requests") is not None:
        out.print(f"Forecast: USD {fmt(fc['usd_per_1k_requests'])} per 1k requests, "
                  f"{fmt(fc.get('g_co2e_per_request'))} g CO2e per request.", highlight=False)
    out.print(f"Recorded: {run_dir}/decisions/{rec['number']:04d}.json (a running `slimlm serve` switches on SIGHUP)",
              highlight=False)
