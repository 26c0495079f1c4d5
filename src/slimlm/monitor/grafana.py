"""A Grafana dashboard (JSON model, schema 39) with the cost-benefit panels of a served decision.

Panels: cost per 1k requests (live against forecast), g CO2e per request (live against forecast), quality drop
(canary and recorded against the tier bound), request latency p50/p99 against the SLO, throughput, shadow
agreement with the teacher, errors by kind, and the operating point (variant, tier, recipe). The datasource
is a template variable, so the file imports into any Grafana with a Prometheus datasource.
"""

from __future__ import annotations

from pathlib import Path

from slimlm.report.decisions import current_decision

_DS = {"type": "prometheus", "uid": "${datasource}"}


def _panel(pid: int, title: str, targets: list[tuple[str, str]], unit: str, x: int, y: int, *, w: int = 12,
           h: int = 8, kind: str = "timeseries", description: str = "") -> dict:
    return {"id": pid, "type": kind, "title": title, "description": description, "datasource": _DS,
            "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [{"refId": chr(65 + i), "expr": expr, "legendFormat": legend, "datasource": _DS}
                        for i, (expr, legend) in enumerate(targets)]}


def grafana_dashboard(run_dir: str | Path, *, job: str = "slimlm", decision: int | None = None) -> dict:
    """The dashboard for ``run_dir``'s decision (import it in Grafana, pick the Prometheus datasource).

    Args:
        run_dir: the run directory being served.
        job: Prometheus job label of the slimlm targets.
        decision: describe this decision instead of the latest.
    """
    from slimlm.monitor.rules import check_job

    check_job(job)
    d = current_decision(run_dir, decision)
    s = f'job="{job}"'
    v = d.get("variant") or {}
    panels = [
        _panel(1, "Cost per 1k requests (USD)", [(f"slimlm_cost_usd_per_1k_requests{{{s}}}", "live {{instance}}"),
                                                  (f"slimlm_cost_forecast_usd_per_1k_requests{{{s}}}", "forecast")],
               "currencyUSD", 0, 0, description="Live: model-busy seconds per request × price per machine-hour."),
        _panel(2, "CO2e per prediction (g)", [(f"slimlm_co2e_grams_per_request{{{s}}}", "live {{instance}}"),
                                              (f"slimlm_co2e_forecast_grams_per_request{{{s}}}", "forecast")],
               "massg", 12, 0),
        _panel(3, "Quality drop vs teacher", [(f"slimlm_canary_quality_drop_ratio{{{s}}}", "canary {{instance}}"),
                                              (f"slimlm_recorded_quality_drop_ratio{{{s}}}", "recorded offline"),
                                              (f"slimlm_quality_drop_bound_ratio{{{s}}}", "tier bound")],
               "percentunit", 0, 8),
        _panel(4, "Request latency vs SLO", [
            (f'histogram_quantile(0.5, sum by (le) (rate(slimlm_request_duration_seconds_bucket{{{s},route=~"/v1/.*"}}[5m])))', "p50"),
            (f'histogram_quantile(0.99, sum by (le) (rate(slimlm_request_duration_seconds_bucket{{{s},route=~"/v1/.*"}}[5m])))', "p99"),
            (f'histogram_quantile(0.5, sum by (le) (rate(slimlm_time_to_first_token_seconds_bucket{{{s}}}[5m])))', "TTFT p50"),
            (f'max(slimlm_latency_slo_seconds{{{s},quantile="0.99"}})', "p99 SLO")], "s", 12, 8),
        _panel(5, "Throughput", [(f'sum(rate(slimlm_requests_total{{{s},route=~"/v1/.*",code="200"}}[5m]))', "requests/s"),
                                 (f"sum(rate(slimlm_generated_tokens_total{{{s}}}[5m]))", "generated tokens/s")],
               "reqps", 0, 16),
        _panel(6, "Shadow agreement with the teacher (live traffic)",
               [(f"slimlm_shadow_top1_agreement_ratio{{{s}}}", "top-1 agreement"),
                (f"slimlm_recorded_teacher_top1_ratio{{{s}}}", "recorded offline")], "percentunit", 12, 16),
        _panel(7, "Errors by kind", [(f"sum by (kind) (rate(slimlm_request_errors_total{{{s}}}[5m]))", "{{kind}}")],
               "reqps", 0, 24),
        _panel(8, "Operating point", [(f"slimlm_operating_point_info{{{s}}}", "{{variant}} · {{tier}} · {{recipe}}")],
               "none", 12, 24, kind="table"),
    ]
    return {
        "title": f"slimlm: {d.get('model')} ({Path(run_dir).name})",
        "uid": f"slimlm-{Path(run_dir).name}"[:40],
        "tags": ["slimlm"], "timezone": "browser", "schemaVersion": 39, "version": 1, "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "description": f"Decision {d.get('number')}: variant {v.get('id')} ({v.get('recipe') or 'baseline'}), tier "
                       f"{d.get('tier') or d.get('max_drop')}.",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus", "current": {}}]},
        "panels": panels,
    }
