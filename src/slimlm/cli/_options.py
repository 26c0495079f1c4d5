"""Options shared by several commands, declared once (Typer reads them as defaults) and turned into the
library's arguments in one place."""

from __future__ import annotations

import typer

DATA = typer.Option("shakespeare", "--data", help="Data for calibration, training and evaluation.")
OOD_DATA = typer.Option("pydoc,rotten-tomatoes", "--ood-data",
                        help="Out-of-domain data to check quality on, several separated by ',' (each measured on "
                             "its own; the guard reads the worst drop); 'none': skip.")
REPEATS = typer.Option(5, "--repeats", min=1, help="Timed runs per shape and variant.")
TIER = typer.Option(None, "--tier", help="critical (≤0.5%), high (≤1%) or medium (≤3%) quality drop.")
MAX_DROP = typer.Option(None, "--max-drop", help="Quality bar instead of a tier, e.g. 2% or 0.02.")
MAX_OOD_DROP = typer.Option(None, "--max-ood-drop", help="Out-of-domain guard: never select a variant whose "
                            "perplexity on any --ood-data corpus rises more than this (default 10%, or the run's; "
                            "e.g. 5% or 0.05; none: off).")
OBJECTIVE = typer.Option("latency", "--objective", help="What the operating point minimises: latency, size, memory, energy.")
#: compress / search: the default follows --profile (latency when profiled, else size)
RUN_OBJECTIVE = typer.Option(None, "--objective", help="What the operating point minimises: latency, size, memory, "
                             "energy (default latency; size with --no-profile).")
MAX_LATENCY_MS = typer.Option(None, "--max-latency-ms", min=0.0, help="p50 latency SLO at the primary shape.")
MAX_MEMORY_MB = typer.Option(None, "--max-memory-mb", min=0.0, help="Peak memory SLO.")
TRAFFIC = typer.Option(100_000, "--traffic", min=0.0, help="Requests per day, for the business figures.")
PRICE = typer.Option(0.10, "--price-per-hour", min=0.0, help="USD per machine-hour.")
GRID = typer.Option(475.0, "--grid-gco2-per-kwh", min=0.0, help="Grid carbon intensity.")
TRACK = typer.Option(None, "--track", help="Also log every variant to a tracker: mlflow (pip install 'slimlm[track]').")
TRACKING_URI = typer.Option(None, "--tracking-uri", help="Tracker URI (default: $MLFLOW_TRACKING_URI, else sqlite in the run dir).")
JSON = typer.Option(False, "--json", help="Print JSON.")
TRUST_REMOTE_CODE = typer.Option(False, "--trust-remote-code",
                                 help="Run Python code shipped with the model (its auto_map); off by default.")
RUNTIME = typer.Option(
    "torch", "--runtime",
    help="Where the variants' latencies (frontier, operating point) are measured: torch, onnxruntime, openvino or "
    "llamacpp. Each variant is exported into <out>/exports as the runtime's equivalent type (int8-dynamic -> ONNX "
    "int8; int8-weight -> OpenVINO int8 / GGUF q8_0; int4-weight -> OpenVINO int4 / GGUF q4_1), checked, and timed "
    "beside the baseline's export; a variant the runtime cannot take is recorded as not measured and never "
    "selected (no fallback to torch). Part of the run: resuming with another --runtime is refused.")
THREADS = typer.Option(None, "--threads", min=1, help="Threads for profiling (default 1: fixed and recorded).")
FORCE_RUN = typer.Option(False, "--force", help="Start over: discard an earlier run at --out (its cache too).")


def run_settings(tier, max_drop, objective, max_latency_ms, max_memory_mb, traffic, price, grid, track,
                 tracking_uri, max_ood_drop=None, profile: bool = True) -> dict:
    """Keyword arguments for `slimlm.workflows.compress` / `search` from the shared options.

    ``objective`` None: latency when the run profiles, else size. Without profiling, an objective or SLO that
    needs it is refused here, before any work (the operating point could not be chosen by it)."""
    from slimlm.errors import ConfigError
    from slimlm.search.study import PROFILED
    from slimlm.workflows import Business, Selection, Tracking

    objective = objective or ("latency" if profile else "size")
    if not profile:
        needs = ([f"--objective {objective}"] if objective in PROFILED else []) + \
            (["--max-latency-ms"] if max_latency_ms is not None else []) + \
            (["--max-memory-mb"] if max_memory_mb is not None else [])
        if needs:
            raise ConfigError(f"{' and '.join(needs)} needs profiling, which --no-profile turns off; drop "
                              f"--no-profile, or choose by size (--objective size).")
    return {"selection": Selection(tier, max_drop, objective, max_latency_ms, max_memory_mb, max_ood_drop),
            "business": Business(traffic, price, grid), "tracking": Tracking(track, tracking_uri)}


def print_run(res, title: str, as_json: bool) -> None:
    """Print a `RunResult`: JSON, or the variant table, the choice and where the report is."""
    from slimlm.cli._out import emit_json, out
    from slimlm.cli._runs import tracking_line, variants_table

    if as_json:
        emit_json(res.to_json())
        return
    rep = res.report
    out.print(variants_table(res.variants, rep["frontier"], rep["selected"], title))
    hv = f"; hypervolume {rep['hypervolume']:.3f}" if res.study is not None and rep["hypervolume"] is not None else ""
    verdict = "meets" if rep["met"] else "NOTHING meets"
    out.print(f"★ selected: {rep['selected'] or '-'}  ◆ frontier{hv} — {verdict} the bar: {rep['rule']}")
    if not rep["met"] or rep.get("excluded_by_guard"):
        out.print(f"[yellow]{rep['reason']}[/yellow]")
    rt = rep.get("runtime") or {}
    if rt and any(v.metrics.latency_p50_ms is not None for v in res.variants):  # nothing timed: nothing to say
        out.print(f"latency measured on {rt.get('label', rt.get('name'))}"
                  + (f", {rt['threads']} thread(s)" if rt.get("threads") else ""), highlight=False)
    for w in rep.get("warnings", []):
        out.print(f"[yellow]warning: {w}[/yellow]", highlight=False)
    out.print(f"report: {rep['report']}\ndecision record: {rep['decision']}")
    if res.tracking:
        out.print(tracking_line(res.tracking), highlight=False)
