"""Shared by `compress`, `search` and `report`: the variant table and the tracking line."""

from __future__ import annotations

from rich.table import Table

from slimlm.cli._out import fmt


def variants_table(variants: list, frontier: list[str], selected: str | None, title: str) -> Table:
    t = Table(title=title)
    # quality is perplexity for a language model, accuracy for a classifier
    classifier = any(v.metrics.get("perplexity") is None and v.metrics.get("accuracy") is not None for v in variants)
    for col, justify in (("", "left"), ("variant", "left"), ("params", "right"), ("disk MB", "right"),
                         ("accuracy" if classifier else "ppl", "right"), ("drop", "right"), ("OOD drop", "right"), ("p50 ms", "right"),
                         ("speedup", "right"), ("decode tok/s", "right"), ("RSS MB", "right")):
        t.add_column(col, justify=justify, overflow="fold")
    for v in variants:
        m = v.metrics
        if not m.measured:
            continue  # a stage output nobody measured (e.g. a prefix cached by another recipe)
        mark = "★" if v.id == selected else ("◆" if v.id in frontier else "")
        speed = next((r for k, r in m.ratios.items() if k.startswith("prefill_speedup_")), None)
        t.add_row(mark, v.label or v.id, fmt(m.params), fmt(m.disk_mb), fmt(m.quality),
                  "-" if m.quality_drop is None else f"{m.quality_drop:+.1%}",
                  "-" if m.ood_quality_drop is None else f"{m.ood_quality_drop:+.1%}",
                  fmt(m.latency_p50_ms), "-" if speed is None else f"{speed:.2f}×",
                  fmt(m.decode_tokens_per_s), fmt(m.peak_rss_mb))
    return t


def tracking_line(tracking: dict) -> str:
    return (f"tracked: {tracking['backend']} run {tracking['run_id']} ({len(tracking['variant_runs'])} variants) "
            f"in experiment {tracking['experiment']!r} at {tracking['tracking_uri']}")
