"""Prometheus alerting rules for a served decision, and promtool unit tests that exercise each of them.

The rules compare the server's own gauges with each other (``slimlm_canary_quality_drop_ratio`` against
``slimlm_quality_drop_bound_ratio``, live cost against ``slimlm_cost_forecast_usd_per_1k_requests``), not
with numbers pasted from the run: after a rollback to a decision with another tier the same rules stay
right. What comes from the run is the context a person paged at night needs (model, variant, tier, recipe,
the runbook line to roll back) and the durations and margins chosen here.

Alerts:
  SlimlmQualityDropBeyondTier   canary drop above the decision's tier bound
  SlimlmShadowAgreementLow      live student-teacher top-1 agreement well below the offline figure
  SlimlmLatencyP99AboveSLO      p99 of /v1/* request latency above the p99 SLO
  SlimlmErrorRateHigh           server-side errors (internal, overloaded) above a share of requests
  SlimlmCostAboveForecast       live cost per 1k requests above the forecast by a margin
  SlimlmCanaryStale             no successful canary for 3 intervals
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from slimlm.errors import ConfigError
from slimlm.report.decisions import current_decision

_JOB = re.compile(r"^[A-Za-z0-9_.:/@-]+$")


def check_job(job: str | None) -> None:
    """`ConfigError` for a job label that would not stay one PromQL string (a quote, a backslash, a space)."""
    if job is not None and not _JOB.match(job):
        raise ConfigError(f"--job {job!r} is not a job name the rules can quote; use letters, digits and _ . : / @ -"
                          " (as in the scrape config's job_name).")


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")


def duration_seconds(text: str, option: str = "--quality-for") -> float:
    """Seconds in a Prometheus duration (``30s``, ``5m``, ``1h30m``, ``0s``); `ConfigError` otherwise."""
    if not _DURATION.match(text or ""):
        raise ConfigError(f"{option} {text!r} is not a duration; write e.g. 30s, 5m or 1h30m.")
    return sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text))


def _selector(job: str | None) -> str:
    return f'{{job="{job}"}}' if job else ""


def alert_rules(run_dir: str | Path, *, job: str | None = "slimlm", quality_for: str = "5m",
                latency_for: str = "10m", cost_margin: float = 0.25, error_ratio: float = 0.01,
                agreement_margin: float = 0.10, window: str = "5m", decision: int | None = None) -> dict:
    """The rule file (as a dict ready for YAML) for ``run_dir``'s decision.

    Args:
        run_dir: the run directory being served.
        job: Prometheus job label of the slimlm targets (None: match every job).
        quality_for: how long the quality drop must stay beyond the bound before firing.
        latency_for: the same for the latency, cost and error alerts.
        cost_margin: fire when live cost per 1k requests exceeds the forecast by this share (0.25 = 25%).
        error_ratio: fire when server errors exceed this share of requests.
        agreement_margin: fire when shadow top-1 agreement falls this far below the recorded value.
        window: rate window for latency and error rates.
        decision: describe this decision instead of the latest.

    Returns:
        ``{"groups": [{"name", "rules": [...]}]}``.
    """
    check_job(job)
    d = current_decision(run_dir, decision)
    s = _selector(job)
    v = d.get("variant") or {}
    ctx = (f"{d.get('model')} → variant {v.get('id')} ({v.get('recipe') or 'baseline'}), decision "
           f"{d.get('number')}, tier {d.get('tier') or d.get('max_drop')}")
    rollback = (f"Roll back: `slimlm decide {Path(run_dir).resolve()} --variant ID` (or an earlier rule) then SIGHUP the server, "
                "or POST /admin/decision {\"decision\": N}.")
    by = "by (job, instance)"
    jl = f'job="{job}",' if job else ""

    def rule(name, expr, for_, severity, summary, description):
        return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity, "service": "slimlm"},
                "annotations": {"summary": summary, "description": f"{description} {ctx}. {rollback}"}}

    rules = [
        rule("SlimlmQualityDropBeyondTier",
             f"max {by} (slimlm_canary_quality_drop_ratio{s}) > max {by} (slimlm_quality_drop_bound_ratio{s})",
             quality_for, "critical", "Served model's quality drop is beyond its tier",
             "The canary's quality drop on the golden sample (the alert's value, a ratio) is above the bound the "
             "decision was signed off with."),
        rule("SlimlmShadowAgreementLow",
             f"max {by} (slimlm_shadow_top1_agreement_ratio{s}) < max {by} (slimlm_recorded_teacher_top1_ratio{s})"
             f" - {agreement_margin:g}",
             quality_for, "warning", "Live traffic agreement with the teacher fell",
             f"Student-teacher top-1 agreement on sampled live requests is over {agreement_margin:g} below the "
             "offline figure; traffic may have left the domain the model was compressed for."),
        rule("SlimlmLatencyP99AboveSLO",
             f'histogram_quantile(0.99, sum by (job, instance, le) (rate(slimlm_request_duration_seconds_bucket'
             f'{{{jl}route=~"/v1/.*"}}[{window}]))) > '
             f'max {by} (slimlm_latency_slo_seconds{{{jl}'
             f'quantile="0.99"}})',
             latency_for, "warning", "p99 request latency is above its SLO",
             "p99 latency of /v1 requests (the alert's value, seconds) is above slimlm_latency_slo_seconds."),
        rule("SlimlmErrorRateHigh",
             f'sum {by} (rate(slimlm_request_errors_total{{{jl}'
             f'kind=~"internal|overloaded"}}[{window}])) / sum {by} (rate(slimlm_requests_total{{{jl}route=~"/v1/.*"}}'
             f'[{window}])) > '
             f"{error_ratio:g}",
             latency_for, "critical", "Server errors above their budget",
             f"Internal or overload errors are more than {error_ratio:.0%} of requests."),
        rule("SlimlmCostAboveForecast",
             f"max {by} (slimlm_cost_usd_per_1k_requests{s}) > {1 + cost_margin:g} * max {by} "
             f"(slimlm_cost_forecast_usd_per_1k_requests{s})",
             latency_for, "warning", "Cost per 1k requests is above the forecast",
             f"Live cost per 1k requests is more than {cost_margin:.0%} over the decision's forecast (longer "
             "requests or a slower machine than profiled)."),
        rule("SlimlmCanaryStale",
             f"time() - max {by} (slimlm_canary_last_success_timestamp_seconds{s}) > 3 * max {by} "
             f"(slimlm_canary_interval_seconds{s}) and max {by} (slimlm_canary_interval_seconds{s}) > 0",
             "0m", "warning", "The quality canary has not succeeded for 3 intervals",
             "Without a canary the quality alert cannot fire; check /healthz and slimlm_canary_runs_total."),
    ]
    return {"groups": [{"name": f"slimlm-{Path(run_dir).name}", "rules": rules}]}


def rule_tests(rules: dict, rules_file: str, *, job: str = "slimlm", quality_for: str = "5m",
               latency_for: str = "10m", cost_margin: float = 0.25) -> dict:
    """promtool unit tests (``promtool test rules``) that make every alert fire and stay quiet as it should.

    Args:
        rules: what `alert_rules` returned (the expected annotations are taken from it).
        rules_file: the rule file's name as promtool will find it (relative to the test file).
        job, quality_for, latency_for, cost_margin: as given to `alert_rules`.
    """
    check_job(job)
    notes = {r["alert"]: r["annotations"] for g in rules["groups"] for r in g["rules"]}
    lab = f'job="{job}",instance="srv:8000"'

    def series(name, values, extra=""):
        return {"series": f"{name}{{{lab}{',' + extra if extra else ''}}}", "values": values}

    def minutes(text: str) -> int:
        return max(1, math.ceil(duration_seconds(text) / 60))

    q, lat = minutes(quality_for), minutes(latency_for)
    t = max(q, lat) + 5
    n = t + 5
    fc = 0.10
    alerts = []

    def expect(name, at, firing):
        alerts.append({"eval_time": f"{at}m", "alertname": name,
                       "exp_alerts": [{"exp_labels": {"severity": sev[name], "service": "slimlm", "job": job,
                                                      "instance": "srv:8000"},
                                       "exp_annotations": notes[name]}] if firing else []})

    sev = {"SlimlmQualityDropBeyondTier": "critical", "SlimlmShadowAgreementLow": "warning",
           "SlimlmLatencyP99AboveSLO": "warning", "SlimlmErrorRateHigh": "critical",
           "SlimlmCostAboveForecast": "warning", "SlimlmCanaryStale": "warning"}
    # 1 request/s, all answered in under 0.25 s at first; from minute 1 every request takes 2.5-5 s
    buckets = []
    for le, slow in (("0.25", False), ("5.0", True), ("+Inf", True)):
        buckets.append(series("slimlm_request_duration_seconds_bucket",
                              f"0+60x1 {'60+60x' + str(n) if slow else '60+0x' + str(n)}",
                              f'route="/v1/completions",le="{le}"'))
    input_series = [
        series("slimlm_quality_drop_bound_ratio", f"0.03x{n}"),
        series("slimlm_canary_quality_drop_ratio", f"0.01 0.2x{n}"),  # drifts at minute 1
        series("slimlm_recorded_teacher_top1_ratio", f"0.95x{n}"),
        series("slimlm_shadow_top1_agreement_ratio", f"0.94 0.5x{n}"),
        series("slimlm_latency_slo_seconds", f"1x{n}", 'quantile="0.99"'),
        *buckets,
        series("slimlm_requests_total", f"0+60x{n}", 'route="/v1/completions",code="200"'),
        series("slimlm_request_errors_total", f"0+0x1 0+30x{n}", 'kind="internal"'),
        series("slimlm_cost_forecast_usd_per_1k_requests", f"{fc}x{n}"),
        series("slimlm_cost_usd_per_1k_requests", f"{fc} {fc * (1 + cost_margin) * 2:g}x{n}"),
        series("slimlm_canary_interval_seconds", f"60x{n}"),
        series("slimlm_canary_last_success_timestamp_seconds", f"0 60 120 120x{n}"),  # stops at minute 2
    ]
    for name in ("SlimlmQualityDropBeyondTier", "SlimlmShadowAgreementLow"):
        expect(name, 1, False)
        expect(name, q + 2, True)
    for name in ("SlimlmLatencyP99AboveSLO", "SlimlmErrorRateHigh", "SlimlmCostAboveForecast"):
        expect(name, 0, False)
        expect(name, lat + 7, True)
    expect("SlimlmCanaryStale", 2, False)
    expect("SlimlmCanaryStale", 6, True)
    return {"rule_files": [rules_file], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": input_series, "alert_rule_test": alerts}]}
