"""Shared by `compress` and `search`: selection options, the variant table, and the final report step."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from slimlm.cli._out import fmt


def selection_settings(tier: str | None, max_drop: str | None, objective: str, max_latency_ms: float | None,
                       max_memory_mb: float | None) -> dict:
    from slimlm.errors import ConfigError
    from slimlm.search import TIERS, parse_drop

    if tier is not None and tier not in TIERS:
        raise ConfigError(f"--tier {tier!r} is not a tier; use one of {', '.join(TIERS)} (or --max-drop).")
    drop = parse_drop(max_drop) if max_drop is not None else TIERS[tier or "medium"]
    return {"tier": tier if max_drop is None else None, "max_drop": drop, "objective": objective,
            "max_latency_ms": max_latency_ms, "max_memory_mb": max_memory_mb}


def variants_table(variants: list[dict], frontier: list[str], selected: str | None, title: str) -> Table:
    t = Table(title=title)
    for col, justify in (("", "left"), ("variant", "left"), ("params", "right"), ("disk MB", "right"),
                         ("ppl", "right"), ("drop", "right"), ("OOD drop", "right"), ("p50 ms", "right"),
                         ("speedup", "right"), ("decode tok/s", "right"), ("RSS MB", "right")):
        t.add_column(col, justify=justify, overflow="fold")
    for v in variants:
        m = v.get("metrics", {})
        if not m:
            continue  # a stage output nobody measured (e.g. a prefix cached by another recipe)
        mark = "★" if v["id"] == selected else ("◆" if v["id"] in frontier else "")
        ratios = m.get("ratios") or {}
        speed = next((r for k, r in ratios.items() if k.startswith("prefill_speedup_")), None)
        drop = m.get("quality_drop")
        ood = m.get("ood_quality_drop")
        quality = m.get("perplexity") if m.get("perplexity") is not None else m.get("accuracy")
        t.add_row(mark, v.get("label", v["id"]), fmt(m.get("params")), fmt(m.get("disk_mb")), fmt(quality),
                  "-" if drop is None else f"{drop:+.1%}", "-" if ood is None else f"{ood:+.1%}",
                  fmt(m.get("latency_p50_ms")), "-" if speed is None else f"{speed:.2f}×",
                  fmt(m.get("decode_tokens_per_s")), fmt(m.get("peak_rss_mb")))
    return t


def finish(run_dir: Path, settings: dict, traffic: float, price: float, grid: float) -> dict:
    """Write the report and decision record; return write_report's summary."""
    from slimlm.report import write_report

    return write_report(run_dir, traffic_per_day=traffic, price_per_hour=price, grid_gco2_per_kwh=grid,
                        tier=settings["tier"], max_drop=settings["max_drop"] if settings["tier"] is None else None,
                        objective=settings["objective"], max_latency_ms=settings["max_latency_ms"],
                        max_memory_mb=settings["max_memory_mb"])


def load_variants(run_dir: Path) -> list[dict]:
    import json

    path = run_dir / "variants.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def check_tracking(track: str | None, tracking_uri: str | None) -> None:
    """Fail before any heavy work when tracking was asked for and cannot happen (unknown backend, no MLflow)."""
    from slimlm.report.tracking import TrackingError, check_backend

    if track is None:
        if tracking_uri is not None:
            raise TrackingError("--tracking-uri needs --track mlflow; add it, or drop --tracking-uri.")
        return
    check_backend(track)


def track_run(run_dir: Path, track: str | None, tracking_uri: str | None, rep: dict) -> dict | None:
    """Log the run directory to the tracker after its report is written; None when not asked to."""
    if track is None:
        return None
    from slimlm.report.tracking import track_run as log_run

    return log_run(run_dir, backend=track, tracking_uri=tracking_uri, summary=rep)


def tracking_line(tracking: dict) -> str:
    return (f"tracked: {tracking['backend']} run {tracking['run_id']} ({len(tracking['variant_runs'])} variants) "
            f"in experiment {tracking['experiment']!r} at {tracking['tracking_uri']}")


def prepare_run_dir(out_dir: Path, force: bool) -> Path:
    """Check ``--out`` of compress/search before heavy work; ``--force`` discards an earlier run there."""
    from slimlm._io import check_out, discard

    out_dir = check_out(out_dir, kind="run")
    if force and (out_dir / "run.json").is_file():
        discard(out_dir)
    return out_dir


def has_stage_output(run_dir: Path) -> bool:
    """True once a run holds work worth resuming (a finished stage in its cache)."""
    return any((d / "slimlm.json").is_file() for d in (run_dir / "cache").glob("*"))
