"""The trade-off report: one self-contained HTML file (Jinja2 template, Plotly inlined) that works offline.

Self-contained means: plotly.js is inlined once, there are no ``<script src>``, ``<link>``, web fonts or
images, and the CSS sits in the file. plotly.js itself carries URLs of map tiles and a topojson CDN for its
geo/map traces, which a report never draws; `offline_plotlyjs` blanks them so that the file cannot reach the
network even by accident, and a plain grep for ``cdn`` or ``https://`` in attributes proves it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from slimlm.recipes import config_from_stage
from slimlm.report.business import Inputs
from slimlm.report.plots import curves_div, pareto_div, sensitivity_div
from slimlm.report.run import Run
from slimlm.runs import Latency, Variant
from slimlm.search.frontier import HV_DROP_CAP, TIERS, Selection, drop_name, value

_URL_WITH_CDN = re.compile(r"""https?://[^"'`\s]*?cdn[^"'`\s]*""", re.IGNORECASE)
_LINK_IN_JS = re.compile(r"""((?:src|href)=\\?["'])https?://[^"'\\]*""", re.IGNORECASE)


@lru_cache(maxsize=1)
def offline_plotlyjs() -> str:
    """plotly.js (the version bundled with the plotly package) with CDN URLs blanked.

    The blanked URLs sit in string literals used only by map and geo traces (tile styles, icons, topojson)
    and in attribution links (map credits, the hidden "made with Plotly" logo, now ``href="#"``), so every
    chart the report draws is unaffected.
    """
    from plotly.offline import get_plotlyjs

    js = _LINK_IN_JS.sub(r"\1#", _URL_WITH_CDN.sub("", get_plotlyjs()))
    if "</script" in js.lower():  # would end the inline <script> early
        js = re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE)
    return js


def fmt(v: Any, digits: int = 3) -> str:
    """A short human number: 1,234 / 12.3 / 0.0123; "–" when missing."""
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        if abs(v) >= 1:
            return f"{v:.{digits - 1}f}"
        return f"{v:.{digits}g}"
    return str(v)


def duration(seconds: float | None) -> str:
    """"42 s", "10.2 min", "3.1 h"; "–" when missing."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def pct(v: float | None, signed: bool = True) -> str:
    if v is None:
        return "–"
    return f"{v * 100:+.2f}%" if signed else f"{v * 100:.1f}%"


_OPPOSITE = {"faster": "slower"}


def _ratio(v: float | None, b: float | None, better_low: bool = True, word: str = "") -> str:
    """"1.9× faster"-style note against the baseline ("" when not computable)."""
    if v is None or b is None or v <= 0 or b <= 0:
        return ""
    r = b / v if better_low else v / b
    if abs(r - 1) < 0.005:
        return "same"
    if r < 1 and word in _OPPOSITE:  # "0.61× faster" reads wrong: say "1.64× slower"
        return f"{1 / r:.2f}× {_OPPOSITE[word]}"
    return f"{r:.2f}× {word}".strip()


def _change(v: float | None, b: float | None) -> str:
    """"−70%"-style relative change against the baseline ("" when not computable)."""
    if v is None or not b:
        return ""
    c = v / b - 1
    return "same" if abs(c) < 0.0005 else f"{c * 100:+.0f}%".replace("-", "−")


def stage_detail(v: Variant) -> str:
    """Each stage with its set options: ``prune: method=structured, ffn=0.25 → quantize: scheme=int8-dynamic``."""
    parts = []
    for st in v.stages:
        cfg = st.get("config") or {}
        first = [k for k in ("method", "scheme") if k in cfg]  # what it is, then how much
        opts = [f"{k}={cfg[k]}" for k in [*first, *(k for k in cfg if k not in first)]
                if k not in ("version", "kind") and cfg[k] not in (None, False, "") and not isinstance(cfg[k], (dict, list, tuple))]
        parts.append(f"{st.get('kind', '?')}" + (f": {', '.join(opts[:5])}" if opts else ""))
    return " → ".join(parts) or ("none (the uncompressed model)" if v.is_baseline else "–")


def stage_text(v: Variant) -> str:
    """A short description of a variant's stages: its label, else the stage kinds joined by arrows."""
    if v.is_baseline:
        return "baseline (uncompressed teacher)"
    if v.label:
        return str(v.label)
    return " → ".join(str(s.get("kind", "?")) for s in v.stages) or "–"


def hardware_note(v: Variant, shape: str) -> str:
    """Where this variant's speed comes from and which hardware it needs: each stage's config says
    (``hardware()``), and the roofline shares say how close to the machine's peaks it runs."""
    notes = []
    for st in v.stages:
        cfg = config_from_stage(st)
        note = cfg.hardware() if cfg is not None else ""
        if note:
            notes.append(note)
    roof = v.metrics.roofline
    share = value(roof.get("prefill_share") or {}, shape)
    if share is not None:
        if share > 1:
            notes.append(f"prefill at {share:.0%} of the fp32 peak (low-precision kernels)")
        elif share >= 0.5:
            notes.append(f"compute-bound prefill at {share:.0%} of peak")
        else:
            notes.append(f"prefill at {share:.0%} of peak compute (overhead- or memory-bound)")
    dshare = value(roof, "decode_share")
    if dshare is not None:
        notes.append(f"decode at {dshare:.0%} of memory bandwidth"
                     + (" (bandwidth-bound: fewer weight bytes help)" if dshare >= 0.5 else ""))
    return "; ".join(dict.fromkeys(notes)) or "–"


def _cell(main: str, sub: str = "") -> dict:
    return {"v": main, "sub": sub}


def comparison_rows(variants: Sequence[Variant], base: Variant | None, shape: str) -> list[dict]:
    """One row per measure, one cell per variant: ``[{"measure", "cells": [{"v", "sub"}]}]``."""

    def m(v, k):
        return value(v, k)

    def b(k):
        return value(base, k) if base else None

    def rel(v, k, **kw):  # relative note against the baseline, blank in the baseline's own column
        return "" if v.is_baseline else _ratio(m(v, k), b(k), **kw)

    def chg(v, k):
        return "" if v.is_baseline else _change(m(v, k), b(k))

    def row(measure, fn, always=False):
        cells = [fn(v) for v in variants]
        if always or any(c["v"] != "–" for c in cells):
            rows.append({"measure": measure, "cells": cells})

    rows: list[dict] = []
    row("stages", lambda v: _cell(stage_detail(v)), always=True)
    row("params", lambda v: _cell(f"{fmt(m(v, 'params') / 1e6)} M", chg(v, "params")) if m(v, "params") else _cell("–"))
    row("nonzero params", lambda v: _cell(fmt(m(v, "nonzero_params") / 1e6) + " M") if m(v, "nonzero_params") else _cell("–"))
    row("disk", lambda v: _cell(f"{fmt(m(v, 'disk_mb'))} MB" if m(v, "disk_mb") else "–",
                                chg(v, "disk_mb")))
    corpora = next((list(v.metrics.ood) for v in variants if v.is_baseline and v.metrics.ood), [])
    for key, label in (("perplexity", "perplexity"), ("ood_perplexity", "OOD perplexity")):
        drop = "quality_drop" if key == "perplexity" else "ood_quality_drop"
        if key == "ood_perplexity" and len(corpora) > 1:  # one row per --ood-data corpus, then the worst drop
            for c in corpora:
                def ood_cell(v, c=c):
                    x = v.metrics.ood.get(c) or {}
                    d = value(x, "quality_drop")
                    return _cell(fmt(value(x, "perplexity")), pct(d) + " drop" if d is not None and not v.is_baseline else "")
                row(f"OOD perplexity ({c})", ood_cell)
            row("OOD drop (worst)", lambda v: _cell(pct(m(v, "ood_quality_drop")) if m(v, "ood_quality_drop") is not None else "–",
                                                    v.metrics.ood_worst or "" if not v.is_baseline else ""))
            continue
        row(label, lambda v, key=key, drop=drop: _cell(fmt(m(v, key)), pct(m(v, drop)) + " drop" if m(v, drop) is not None and not v.is_baseline else ""))
    row("accuracy", lambda v: _cell(fmt(m(v, "accuracy")), pct(m(v, "quality_drop")) + " drop"
                                    if m(v, "accuracy") is not None and m(v, "perplexity") is None else ""))
    row("F1", lambda v: _cell(fmt(m(v, "f1"))))
    row("calibration (ECE)", lambda v: _cell(fmt(m(v, "ece"))))
    row("teacher top-1 agreement", lambda v: _cell(pct(m(v, "teacher_top1"), signed=False) if m(v, "teacher_top1") is not None else "–"))
    row("teacher KL (nats)", lambda v: _cell(fmt(m(v, "teacher_kl"))))
    def runtime_cell(v):
        rt, why = v.metrics.get("runtime"), v.metrics.get("runtime_not_measured")
        if not rt or rt == "torch":
            return _cell("–")
        if why:
            return _cell(f"not measured on {rt}", str(why))
        check, size = v.metrics.get("runtime_check") or {}, v.metrics.get("runtime_disk_mb")
        ip = v.metrics.get("runtime_inference_precision")
        note = " · ".join(x for x in (f"{fmt(size)} MB exported" if size else "",
                                      f"export perplexity {check['relative_change'] * 100:+.2f}% vs the variant"
                                      if check.get("relative_change") is not None else "",
                                      f"export embeddings' min cosine {check['min_cosine']:.4f} vs the variant"
                                      if check.get("min_cosine") is not None else "",
                                      f"export top class agrees on {check['argmax_agreement']:.0%}"
                                      if check.get("argmax_agreement") is not None else "",
                                      f"runs in {ip}" if ip and ip != "f32" else "") if x)
        return _cell(f"{rt} · {v.metrics.get('runtime_format') or '?'} {v.metrics.get('runtime_precision') or '?'}", note)
    row("runtime (latency measured on)", runtime_cell)
    row(f"latency p50 ({shape})", lambda v: _cell(f"{fmt(m(v, 'latency_p50_ms'))} ms" if m(v, "latency_p50_ms") else "–",
                                                 rel(v, "latency_p50_ms", word="faster")))
    row(f"latency p99 ({shape})", lambda v: _cell(f"{fmt(m(v, 'latency_p99_ms'))} ms" if m(v, "latency_p99_ms") else "–"))
    shapes = sorted({s for v in variants for s in v.metrics.latency_ms if s != shape})
    for s in shapes:
        def other(v, s=s):
            p = (v.metrics.latency_ms.get(s) or Latency()).p50
            bp = (base.metrics.latency_ms.get(s) or Latency()).p50 if base else None
            return _cell(f"{fmt(p)} ms" if p else "–", "" if v.is_baseline else _ratio(p, bp, word="faster"))
        row(f"latency p50 ({s})", other)
    row("decode", lambda v: _cell(f"{fmt(m(v, 'decode_tokens_per_s'))} tok/s" if m(v, "decode_tokens_per_s") else "–",
                                  rel(v, "decode_tokens_per_s", better_low=False, word="faster")))
    row("peak memory (RSS)", lambda v: _cell(f"{fmt(m(v, 'peak_rss_mb'))} MB" if m(v, "peak_rss_mb") else "–",
                                             chg(v, "peak_rss_mb")))
    row("energy / 1k tokens", lambda v: _cell(f"{fmt(m(v, 'energy_j_per_1k_tokens'))} J" if m(v, "energy_j_per_1k_tokens") else "–",
                                              " · ".join(x for x in (chg(v, "energy_j_per_1k_tokens"),
                                                                        str(v.metrics.energy_source or "")) if x)))
    row("CO2e / 1k tokens", lambda v: _cell(f"{fmt(m(v, 'co2e_g_per_1k_tokens'))} g" if m(v, "co2e_g_per_1k_tokens") else "–"))

    def roof(v):
        r = v.metrics.roofline
        p, d = value(r.get("prefill_share") or {}, shape), value(r, "decode_share")
        if p is None and d is None:
            return _cell("–")
        return _cell(f"prefill {pct(p, False) if p is not None else '–'} · decode {pct(d, False) if d is not None else '–'}",
                     "of compute / bandwidth peak")
    row("roofline share", roof)
    row("hardware suitability", lambda v: _cell(hardware_note(v, shape)))

    def recovery(v):
        r = v.recovery
        tok, sec = value(r, "tokens"), value(r, "seconds")
        if not tok and not sec:  # the pipeline writes zeros for variants without training
            return _cell("none" if not v.is_baseline else "–")
        return _cell(f"{fmt(int(tok)) if tok is not None else '–'} tokens", duration(sec) if sec is not None else "")
    row("recovery (distillation)", recovery)
    row("pipeline time", lambda v: _cell(duration(value(v, "seconds"))
                                         if value(v, "seconds") is not None and not v.is_baseline else "–"))
    return rows


def _tiers_text() -> str:
    return ", ".join(f"{k} ≤ {v * 100:g}%" for k, v in TIERS.items())


def render_html(run: Run, sel: Selection, *, frontier_ids: list[str], objectives: Sequence[str],
                hypervolume: float | None, biz: Mapping[str, Mapping[str, Any]], inputs: Inputs,
                headline: Mapping[str, Any]) -> str:
    """Render the report page (see `slimlm.report.write_report` for the inputs)."""
    import jinja2

    variants, base, shape = run.variants, run.baseline, inputs.primary_shape
    chosen_id = sel.chosen.id if sel.chosen else None
    point_id = chosen_id or (sel.closest.id if sel.closest else None)
    dname = drop_name(variants)
    plots = []
    for cost, title in (("latency_p50_ms", f"p50 latency {shape} (ms)"), ("disk_mb", "disk size (MB)"),
                        ("energy_j_per_1k_tokens", "energy per 1k tokens (J)"), ("peak_rss_mb", "peak memory (MB)")):
        div = pareto_div(variants, cost, title, chosen_id=point_id, drop_title=dname, div_id=f"pareto-{cost}",
                         point_name="operating point" if sel.met else "closest variant")
        if div:
            plots.append({"title": f"{dname} vs {title}", "div": div})
    heatmaps = [sensitivity_div(t, f"sensitivity-{i}") for i, t in enumerate(run.sensitivity)]
    curves = curves_div(variants, "curves")

    shown_ids = [v.id for v in variants if v.is_baseline]
    for vid in [point_id, *frontier_ids]:
        if vid and vid not in shown_ids:
            shown_ids.append(vid)
    by_id = {v.id: v for v in variants}
    shown = [by_id[i] for i in shown_ids if i in by_id]
    tables = [{"title": "Baseline, operating point and frontier", "variants": shown,
               "rows": comparison_rows(shown, base, shape)}]
    if len(shown) < len(variants):
        tables.append({"title": f"All {len(variants)} variants", "variants": variants,
                       "rows": comparison_rows(variants, base, shape), "collapsed": True})

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=fmt, pct=pct)
    machine = run.info.get("machine") or {}
    sources = sorted({str(v.metrics.energy_source) for v in variants if v.metrics.energy_source})
    return env.get_template("report.html.j2").render(
        run=run.info, run_dir=str(run.dir), notes=run.notes, sel=sel, point=by_id.get(point_id),
        headline=headline, dname=dname, plots=plots, heatmaps=heatmaps, curves=curves, tables=tables,
        frontier_ids=frontier_ids, objectives=list(objectives), hypervolume=hypervolume, hv_cap=HV_DROP_CAP,
        biz=biz, inputs=inputs, variants=variants, base=base, machine=machine, energy_sources=sources,
        runtime=run.runtime,
        tiers=_tiers_text(), stage_text=stage_text, plotlyjs=offline_plotlyjs(), shape=shape,
        n_sens_tables=len(run.sensitivity))
