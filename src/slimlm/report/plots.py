"""Plotly figures for the report, each returned as an HTML ``<div>`` that expects plotly.js already on the page.

The page inlines plotly.js once (see `slimlm.report.html`), so each figure costs a few kB instead of 4 MB.
Div ids are fixed, so the same run renders to the same file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from slimlm.runs import Variant
from slimlm.search.frontier import TIERS, pareto_front, value

_FONT = dict(family="system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif", size=12)
_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}
_TIER_FILL = {"critical": "rgba(46, 160, 67, 0.22)", "high": "rgba(46, 160, 67, 0.11)",
              "medium": "rgba(210, 153, 34, 0.12)"}


def _div(fig, div_id: str) -> str:
    fig.update_layout(font=_FONT, template="plotly_white")
    if not fig.layout.margin.t:
        fig.update_layout(margin=dict(l=60, r=20, t=40, b=50))
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=_CONFIG)


def _name(v: Variant) -> str:
    return "baseline" if v.is_baseline else str(v.label or v.id)


def pareto_div(variants: Sequence[Variant], cost: str, cost_title: str, *, chosen_id: str | None,
               drop_title: str, div_id: str, point_name: str = "operating point") -> str | None:
    """Quality drop (%) against one cost: every variant, the 2-D frontier as a staircase, the operating
    point and the tier bands. None when no variant has both numbers."""
    import plotly.graph_objects as go

    pts = [v for v in variants if value(v, cost) is not None and value(v, "quality_drop") is not None]
    if not pts:
        return None
    front = sorted((pts[i] for i in pareto_front(pts, ["quality_drop", cost])), key=lambda v: value(v, cost))
    front_ids = {id(v) for v in front}
    fig = go.Figure()
    lo = min(0.0, min(value(v, "quality_drop") for v in pts) * 100)
    bottom = lo
    # disjoint bands, labelled at staggered x in the lower left, where no real variant sits (fast and lossless)
    for (name, top), x in zip(sorted(TIERS.items(), key=lambda kv: kv[1]), (0.01, 0.2, 0.4), strict=True):
        fig.add_hrect(y0=bottom, y1=top * 100, fillcolor=_TIER_FILL[name], line_width=0, layer="below")
        fig.add_annotation(x=x, xref="paper", y=top * 100, yref="y", text=f"{name} ≤ {top * 100:g}%",
                           showarrow=False, xanchor="left", yanchor="bottom", font=dict(size=10, color="#57606a"))
        bottom = top * 100
    fig.add_trace(go.Scatter(x=[value(v, cost) for v in front], y=[value(v, "quality_drop") * 100 for v in front],
                             mode="lines", line=dict(shape="hv", color="#0969da", width=2), name="frontier",
                             hoverinfo="skip"))
    groups = [("frontier variants", [v for v in pts if id(v) in front_ids and not v.is_baseline],
               dict(color="#0969da", size=10)),
              ("other variants", [v for v in pts if id(v) not in front_ids and not v.is_baseline],
               dict(color="#8c959f", size=9)),
              ("baseline", [v for v in pts if v.is_baseline], dict(color="#1f2328", size=12, symbol="diamond")),
              (point_name, [v for v in pts if chosen_id is not None and v.id == chosen_id],
               dict(color="#cf222e", size=20, symbol="star", line=dict(color="white", width=1)))]
    for name, vs, marker in groups:
        if not vs:
            continue
        fig.add_trace(go.Scatter(
            x=[value(v, cost) for v in vs], y=[value(v, "quality_drop") * 100 for v in vs], mode="markers",
            marker=marker, name=name, text=[_name(v) for v in vs], customdata=[v.id for v in vs],
            hovertemplate=f"%{{text}}<br>id %{{customdata}}<br>{drop_title} %{{y:.2f}}%<br>{cost_title} %{{x:,.4g}}<extra></extra>"))
    fig.update_layout(height=400, xaxis_title=cost_title, yaxis_title=f"{drop_title} (%)",
                      legend=dict(orientation="h", y=-0.2, x=0, yanchor="top"), hovermode="closest",
                      margin=dict(l=60, r=20, t=10, b=40))
    return _div(fig, div_id)


def sensitivity_div(table: Mapping[str, Any], div_id: str) -> str:
    """Heat map of the quality change when each layer is pruned alone, per ratio (one row per ratio)."""
    import plotly.graph_objects as go

    rows = table["rows"]
    layers = sorted({r["layer"] for r in rows})
    ratios = sorted({r["ratio"] for r in rows})
    kind = table.get("kind", "?")
    drift = table.get("metric") == "output_drift"
    cell = {(r["layer"], r["ratio"]): r for r in rows}

    def z(layer, ratio):
        r = cell.get((layer, ratio))
        if r is None:
            return None
        if drift or r.get("ratio_to_baseline") is None:
            return r.get("value")
        return (r["ratio_to_baseline"] - 1) * 100

    labels = ["removed" if kind == "layers" else f"{r:g}" for r in ratios]
    unit = "output drift" if drift else "perplexity increase (%)"
    fig = go.Figure(go.Heatmap(
        z=[[z(layer, r) for layer in layers] for r in ratios], x=[str(layer) for layer in layers], y=labels,
        colorscale="YlOrRd", colorbar=dict(title=dict(text="%" if not drift else "", side="top"), thickness=14),
        hovertemplate=f"layer %{{x}}<br>{'ratio' if kind != 'layers' else ''} %{{y}}<br>{unit} %{{z:.3g}}<extra></extra>"))
    fig.update_layout(height=160 + 40 * len(ratios), title=dict(text=f"{kind} pruned alone: {unit}", x=0, font=dict(size=13)),
                      xaxis_title="layer", yaxis_title="ratio" if kind != "layers" else "")
    return _div(fig, div_id)


def curves_div(variants: Sequence[Variant], div_id: str) -> str | None:
    """Recovery curves (e.g. distillation eval perplexity per step), one line per variant and series."""
    import plotly.graph_objects as go

    fig = go.Figure()
    keys = set()
    for v in variants:
        for stage, curve in v.curves.items():
            if not isinstance(curve, Mapping) or not isinstance(curve.get("step"), list):
                continue
            for key, ys in curve.items():
                if key == "step" or not isinstance(ys, list) or len(ys) != len(curve["step"]):
                    continue
                keys.add(key)
                fig.add_trace(go.Scatter(x=curve["step"], y=ys, mode="lines+markers", marker=dict(size=5),
                                         name=f"{_name(v)} · {stage} {key.replace('_', ' ')}"))
    if not fig.data:
        return None
    fig.update_layout(height=380, xaxis_title="step", yaxis_title=keys.pop().replace("_", " ") if len(keys) == 1 else "value",
                      legend=dict(font=dict(size=11), orientation="h", y=-0.2, yanchor="top"),
                      margin=dict(l=60, r=20, t=10, b=40))
    return _div(fig, div_id)
