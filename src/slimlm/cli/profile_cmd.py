"""`slimlm profile`: efficiency of one model, or several side by side with ratios against the first."""

from __future__ import annotations

import typer
from rich.table import Table

from slimlm.cli import _options as O
from slimlm.cli._out import emit_json, fmt, out, progress_bars, status
from slimlm.errors import ConfigError


def profile_table(results: list[dict], title: str = "profile") -> Table:
    """Rows are measures, columns are models; ratios against the first model when there are several."""
    table = Table(title=title)
    table.add_column("measure")
    for r in results:
        table.add_column(r["model"], justify="right", overflow="fold")
    many = len(results) > 1

    def row(label, get, ratio_key=None, digits=3):
        cells = []
        for r in results:
            v = get(r)
            cell = fmt(v, digits)
            if many and ratio_key and r is not results[0] and r.get("ratios", {}).get(ratio_key) is not None:
                cell += f" ({r['ratios'][ratio_key]:.2f}×)"
            cells.append(cell)
        table.add_row(label, *cells)

    row("params", lambda r: r["params"], "params")
    if any(r.get("source_file_mb") for r in results):
        row("source file MB (as brought)", lambda r: r.get("source_file_mb"))
    row("non-zero params", lambda r: r["nonzero_params"])
    row("disk MB", lambda r: r.get("disk_mb"), "disk")
    row("peak RSS MB", lambda r: r.get("peak_rss_mb"))
    for key in results[0]["latency_ms"]:
        row(f"prefill {key} p50 ms", lambda r, k=key: r["latency_ms"][k]["p50"], f"prefill_speedup_{key}")
        row(f"prefill {key} p90 / p99 ms", lambda r, k=key: f"{fmt(r['latency_ms'][k]['p90'])} / "
            f"{fmt(r['latency_ms'][k]['p99'])}")
        row(f"GFLOP {key}", lambda r, k=key: r["flops"][k] / 1e9, f"flops_{key}")
        row(f"compute roofline share {key}", lambda r, k=key: r["roofline"]["prefill_share"][k])
    row("decode tok/s", lambda r: r.get("decode_tokens_per_s"), "decode_speedup")
    row("bandwidth roofline share (decode)", lambda r: r["roofline"].get("decode_share"))
    row("energy J / 1k tokens", lambda r: r.get("energy_j_per_1k_tokens"))
    row("CO2e g / 1k tokens", lambda r: r.get("co2e_g_per_1k_tokens"))
    return table


def _runtime_table(results: list[dict]) -> Table:
    r0 = results[0]
    table = Table(title=f"profile on {r0['runtime']} ({r0['format']}, {r0['threads']} threads)")
    table.add_column("measure")
    for r in results:
        table.add_column(r["model"], justify="right", overflow="fold")
    table.add_row("type", *[r["precision"] + (f" (runs in {r['inference_precision']})"
                                              if r.get("inference_precision") not in (None, "f32") else "")
                            + (" (the file as brought)" if r.get("as_brought") else "") for r in results])
    table.add_row("disk MB", *[fmt(r["disk_mb"]) for r in results])
    for key in r0["latency_ms"]:
        table.add_row(f"prefill {key} p50 ms", *[
            fmt(r["latency_ms"][key]["p50"]) + (f" ({r['ratios'][f'prefill_speedup_{key}']:.2f}×)" if r is not r0 else "")
            for r in results])
    if any(r.get("peak_rss_mb") for r in results):
        table.add_row(f"peak RSS MB ({r0['memory_probe']['shape']})", *[
            fmt(r["peak_rss_mb"]) + (f" ({r['ratios']['peak_rss']:.2f}×)" if r is not r0 and r["ratios"].get("peak_rss")
                                     else "") if r.get("peak_rss_mb") else "n/a" for r in results])
    encoder = r0.get("task", "causal-lm") != "causal-lm"
    table.add_row("decode tok/s", *[fmt(r["decode_tokens_per_s"]) if r["decode_tokens_per_s"]
                                    else "n/a (encoder)" if encoder else "n/a (no KV graph)" for r in results])
    if any(r.get("energy_j_per_1k_tokens") for r in results):
        table.add_row("energy J / 1k tokens (prefill)", *[
            fmt(r.get("energy_j_per_1k_tokens")) + (f" ({r['ratios']['energy']:.2f}×)"
                                                    if r is not r0 and r.get("ratios", {}).get("energy") else "")
            for r in results])
        table.add_row("CO2e g / 1k tokens (prefill)", *[fmt(r.get("co2e_g_per_1k_tokens")) for r in results])
    return table


def profile_command(
    models: list[str] = typer.Argument(..., metavar="MODELS", help="One or more model specs; several are compared, interleaved."),
    shapes: str = typer.Option("1x128,8x128", "--shapes", help="Prefill shapes BxS, comma-separated."),
    decode_tokens: int = typer.Option(64, "--decode-tokens", min=0, help="New tokens per decode run (0 skips decode)."),
    threads: int | None = typer.Option(None, "--threads", min=1,
                                       help="Threads (default 1: fixed and recorded; more measure the neighbours too)."),
    runtime: str = typer.Option("torch", "--runtime", help="torch, onnxruntime, openvino or llamacpp (export first)."),
    precision: str | None = typer.Option(None, "--type", help="Export type for --runtime, for every model (default: "
                                         "each model's equivalent: fp32 / f16 unquantized, int8-dynamic -> onnx int8, "
                                         "int8-weight -> openvino int8 / q8_0, int4-weight -> openvino int4 / q4_1; "
                                         "llamacpp also takes its K-quants, e.g. q4_k_m)."),
    repeats: int = typer.Option(10, "--repeats", min=1, help="Timed runs per shape after 2 warm-up runs."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure peak RSS in a fresh process (off: "
                                "no save either, so disk size only for a saved variant directory)."),
    trust_remote_code: bool = O.TRUST_REMOTE_CODE,
    as_json: bool = typer.Option(False, "--json", help="Print JSON: an object for one model, a list for several."),
) -> None:
    """Measure params, disk, peak RSS, latency p50/p90/p99, decode tok/s, FLOPs, roofline share and energy."""
    from slimlm.models import load
    from slimlm.profile import compare, parse_shapes

    shape_list = parse_shapes(shapes)
    if precision is not None and runtime == "torch":  # it would be ignored: the torch profile runs the model as it is
        raise ConfigError(f"--type {precision} picks the export type of --runtime onnxruntime, openvino or "
                          "llamacpp; torch profiles the model as it is (quantize it first for another type).")
    loaded = [load(m, progress=status, trust_remote_code=trust_remote_code) for m in models]
    if runtime != "torch":
        from slimlm.export.runtimes import compare_runtime

        with progress_bars(not as_json) as bar:
            results = compare_runtime(loaded, runtime, shapes=shape_list, decode_tokens=decode_tokens,
                                      threads=threads, repeats=repeats, precision=precision, memory=memory,
                                      progress=bar)
        if as_json:
            emit_json(results[0] if len(results) == 1 else results)
            return
        out.print(_runtime_table(results))
        if results[0].get("energy_source"):
            out.print(f"[dim]energy over the timed prefills: {results[0]['energy_source']}[/dim]")
        return
    with progress_bars(not as_json) as bar:
        results = compare(loaded, shapes=shape_list, decode_tokens=decode_tokens, threads=threads,
                          repeats=repeats, memory=memory, progress=bar)
    if as_json:
        if len(results) == 1:
            results[0].pop("ratios", None)
            emit_json(results[0])
        else:
            emit_json(results)
        return
    out.print(profile_table(results))
    r = results[0]
    out.print(f"[dim]{r['threads']} threads on {r['machine']['cpu']} ({r['machine']['cores']} cores); roofline "
              f"{r['roofline']['peak_gflops']:.0f} GFLOP/s, {r['roofline']['peak_gb_s']:.1f} GB/s; energy "
              f"{r['energy_source']}, grid {r['grid_gco2_per_kwh']:.0f} gCO2/kWh[/dim]")
