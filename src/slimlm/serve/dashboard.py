"""``GET /dashboard``: the decision's Pareto frontier with the live operating point moving on it.

One self-contained page (plotly.js inlined, no network, as the report): x is p50 prefill latency at the run's
primary shape, y the quality drop against the teacher, the two axes the decision traded. The frontier and
every variant come from the run; the live point is read from ``/metrics`` every few seconds: the canary's
quality drop and its prefill timing. A table beside it puts live cost, CO2e, shadow agreement and the
canary next to their forecasts and bounds. When the served decision changes the page reloads itself.
"""

from __future__ import annotations

import html
import json

from slimlm.report.html import offline_plotlyjs
from slimlm.serve.target import Target

FRONTIER_COLOUR = "rgb(0, 90, 255)"
LIVE_COLOUR = "rgb(230, 0, 0)"
DECISION_COLOUR = "rgb(255, 160, 0)"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>slimlm: __TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;margin:16px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px} .sub{color:#555;margin-bottom:12px}
.wrap{display:flex;gap:16px;flex-wrap:wrap} #plot{width:760px;height:520px}
table{border-collapse:collapse;font-size:14px} td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left} .bad{color:#c00;font-weight:bold} .ok{color:#070}
</style>
<script>__PLOTLY__</script></head><body>
<h1>__TITLE__</h1>
<div class="sub">__SUB__</div>
<div class="wrap"><div id="plot"></div>
<table id="stats"><tr><th>measure</th><th>live</th><th>forecast / bound</th></tr></table></div>
<script>
const D = __DATA__;
const FRONTIER = "__FRONTIER__", LIVE = "__LIVE__", DECISION = "__DECISION__";
const pts = D.variants.filter(v => v.latency_p50_ms != null && v.quality_drop != null);
const front = pts.filter(v => D.frontier.includes(v.id)).sort((a, b) => a.latency_p50_ms - b.latency_p50_ms);
const chosen = pts.filter(v => v.id === D.selected);
const traces = [
  {x: pts.map(v => v.latency_p50_ms), y: pts.map(v => 100 * v.quality_drop), text: pts.map(v => v.label || v.id),
   mode: "markers", name: "variants", marker: {color: "rgb(150,150,150)", size: 9}, hoverinfo: "text+x+y"},
  {x: front.map(v => v.latency_p50_ms), y: front.map(v => 100 * v.quality_drop), text: front.map(v => v.label || v.id),
   mode: "lines+markers", name: "Pareto frontier", line: {color: FRONTIER, width: 4}, marker: {color: FRONTIER, size: 11}},
  {x: chosen.map(v => v.latency_p50_ms), y: chosen.map(v => 100 * v.quality_drop), mode: "markers",
   name: "decision (offline)", marker: {color: DECISION, size: 20, symbol: "star"}},
  {x: [], y: [], mode: "markers", name: "live (canary)", marker: {color: LIVE, size: 24, line: {color: "#600", width: 2}}},
];
const shapes = D.bound == null ? [] : [{type: "line", xref: "paper", x0: 0, x1: 1, y0: 100 * D.bound, y1: 100 * D.bound,
  line: {color: "#c00", dash: "dash", width: 2}}];
const layout = {margin: {l: 60, r: 20, t: 30, b: 50}, xaxis: {title: {text: "p50 prefill latency " + D.shape + " (ms)"}},
  yaxis: {title: {text: "quality drop vs teacher (%)"}}, shapes: shapes, legend: {orientation: "h", y: -0.18},
  annotations: D.bound == null ? [] : [{xref: "paper", x: 1, y: 100 * D.bound, text: "tier bound", showarrow: false,
  yanchor: "bottom", xanchor: "right", font: {color: "#c00"}}]};
Plotly.newPlot("plot", traces, layout, {staticPlot: false, displayModeBar: false});

function parse(text) {
  const out = {};
  for (const line of text.split("\\n")) {
    if (!line || line[0] === "#") continue;
    const i = line.lastIndexOf(" ");
    const name = line.slice(0, i), val = parseFloat(line.slice(i + 1));
    out[name] = val;
  }
  return out;
}
const fmt = (x, d) => (x == null || isNaN(x)) ? "–" : Number(x).toPrecision(d || 3);
function row(label, live, ref, bad) {
  return "<tr><td>" + label + "</td><td class='" + (bad ? "bad" : "ok") + "'>" + live + "</td><td>" + ref + "</td></tr>";
}
async function refresh() {
  let m;
  try { m = parse(await (await fetch("/metrics", {cache: "no-store"})).text()); } catch (e) { return; }
  const dec = m["slimlm_decision_number"];
  if (D.number != null && dec != null && dec !== D.number) { location.reload(); return; }
  const drop = m["slimlm_canary_quality_drop_ratio"], lat = m["slimlm_canary_prefill_latency_seconds"];
  if (drop != null && !isNaN(drop) && lat != null && !isNaN(lat)) {
    Plotly.restyle("plot", {x: [[1000 * lat]], y: [[100 * drop]]}, [3]);
  }
  const cost = m["slimlm_cost_usd_per_1k_requests"], fc = m["slimlm_cost_forecast_usd_per_1k_requests"];
  const co2 = m["slimlm_co2e_grams_per_request"], fco2 = m["slimlm_co2e_forecast_grams_per_request"];
  const top1 = m["slimlm_shadow_top1_agreement_ratio"], rtop1 = m["slimlm_recorded_teacher_top1_ratio"];
  document.getElementById("stats").innerHTML = "<tr><th>measure</th><th>live</th><th>forecast / bound</th></tr>"
    + row("quality drop (canary)", fmt(100 * drop) + "%", "≤ " + fmt(100 * D.bound) + "%", drop > D.bound)
    + row("prefill p50 " + D.shape, fmt(1000 * lat) + " ms", fmt(D.recorded_latency_ms) + " ms", false)
    + row("USD per 1k requests", fmt(cost), fmt(fc), cost > 1.25 * fc)
    + row("g CO2e per request", fmt(co2), fmt(fco2), co2 > 1.25 * fco2)
    + row("shadow top-1 agreement", fmt(100 * top1) + "%", fmt(100 * rtop1) + "% offline", top1 < rtop1 - 0.1)
    + row("requests in flight", fmt(m["slimlm_requests_in_flight"], 2), "", false);
}
refresh();
setInterval(refresh, __REFRESH_MS__);
</script></body></html>
"""


def render_dashboard(target: Target, refresh_ms: int = 3000) -> str:
    """The dashboard page for ``target`` (a run's decision); a bare variant gets an empty frontier."""
    d = target.decision or {}
    data = {"variants": target.variants, "frontier": d.get("frontier") or [], "selected": target.variant_id,
            "bound": d.get("max_drop"), "number": target.number, "shape": d.get("primary_shape") or "1x128",
            "recorded_latency_ms": target.recorded.get("latency_p50_ms")}
    info = target.info()
    title = f"{info['model']}: serving {info['variant']}"
    sub = (f"decision {info['decision'] or '–'} · tier {info['tier'] or '–'} · {info['recipe'] or 'baseline'} · "
           f"run {info['run'] or '–'}")
    page = _PAGE
    for key, val in (("__TITLE__", html.escape(title)), ("__SUB__", html.escape(sub)),
                     ("__DATA__", json.dumps(data).replace("</", "<\\/")), ("__FRONTIER__", FRONTIER_COLOUR),
                     ("__LIVE__", LIVE_COLOUR), ("__DECISION__", DECISION_COLOUR),
                     ("__REFRESH_MS__", str(int(refresh_ms)))):
        page = page.replace(key, val)
    return page.replace("__PLOTLY__", offline_plotlyjs())  # last: plotly.js must not be searched for markers
