"""The server's Prometheus metrics: traffic, errors, the operating point, drift, and live cost and CO2e.

Names follow Prometheus conventions: a ``slimlm_`` prefix, base units (seconds, bytes, ratios), ``_total``
counters. Quality drops are ratios (0.03 = 3% worse than the teacher), the same scale as the tier bounds.
Each app owns its registry, so several servers (or tests) in one process do not collide.

Live cost uses the business model of ``slimlm.report.business`` with the *measured* service time: cost per 1k
requests = 1000 × (model-busy seconds per request) / 3600 × USD per machine-hour, and g CO2e per request =
busy power (from the decision's offline energy measurement) × busy seconds / 3.6e6 × grid g/kWh, both
averaged over the last ``cost_window`` requests. The forecast beside it is the decision's, for
``prefill_tokens`` + ``decode_tokens`` per request; live requests of another size cost proportionally more or
less, which is the point of watching it.
"""

from __future__ import annotations

import math
import threading
from collections import deque

from slimlm.serve.target import Target

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
NAN = float("nan")


def _num(x) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else NAN


class ServerMetrics:
    """Every metric the server exports, in its own registry (``render()`` gives the exposition text)."""

    def __init__(self, cost_window: int = 256):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = r = CollectorRegistry()
        self.request_seconds = Histogram("slimlm_request_duration_seconds", "Request latency, arrival to last byte.",
                                         ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft_seconds = Histogram("slimlm_time_to_first_token_seconds", "Arrival to the first generated token.",
                                      ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("slimlm_queue_wait_seconds", "Time a request waited for a worker.",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.requests = Counter("slimlm_requests_total", "Requests answered, by route and status code.",
                                ["route", "code"], registry=r)
        self.errors = Counter("slimlm_request_errors_total", "Requests refused or failed, by kind.", ["kind"],
                              registry=r)
        self.prompt_tokens = Counter("slimlm_prompt_tokens_total", "Prompt (input) tokens processed.", registry=r)
        self.generated_tokens = Counter("slimlm_generated_tokens_total", "Tokens generated.", registry=r)
        self.busy_seconds = Counter("slimlm_model_busy_seconds_total", "Seconds the model spent computing requests.",
                                    registry=r)
        self.in_flight = Gauge("slimlm_requests_in_flight", "Requests being computed or waiting.", registry=r)
        self.info = Info("slimlm_operating_point", "The served operating point.", registry=r)
        self.decision = Gauge("slimlm_decision_number", "Number of the served decision (0: run.json's rule).",
                              registry=r)
        self.switches = Counter("slimlm_decision_switches_total", "Switches to another decision.", ["outcome"],
                                registry=r)
        self.bound = Gauge("slimlm_quality_drop_bound_ratio", "Largest quality drop the decision's tier allows.",
                           registry=r)
        self.recorded_drop = Gauge("slimlm_recorded_quality_drop_ratio", "Quality drop measured offline.", registry=r)
        self.recorded_top1 = Gauge("slimlm_recorded_teacher_top1_ratio", "Teacher top-1 agreement measured offline.",
                                   registry=r)
        self.slo = Gauge("slimlm_latency_slo_seconds", "Latency SLOs of the operating point.", ["quantile"],
                         registry=r)
        self.recorded_prefill = Gauge("slimlm_recorded_prefill_latency_seconds",
                                      "p50 prefill latency at the primary shape, measured offline.", registry=r)
        self.forecast_cost = Gauge("slimlm_cost_forecast_usd_per_1k_requests", "The decision's cost forecast.",
                                   registry=r)
        self.forecast_co2 = Gauge("slimlm_co2e_forecast_grams_per_request", "The decision's CO2e forecast.",
                                  registry=r)
        self.canary_drop = Gauge("slimlm_canary_quality_drop_ratio", "Quality drop on the golden sample, live.",
                                 registry=r)
        self.canary_value = Gauge("slimlm_canary_quality", "Perplexity (LM) or accuracy (classifier) on the golden "
                                  "sample.", ["model"], registry=r)
        self.canary_prefill = Gauge("slimlm_canary_prefill_latency_seconds",
                                    "p50 prefill latency at the primary shape, timed by the canary.", registry=r)
        self.canary_last = Gauge("slimlm_canary_last_success_timestamp_seconds", "When the canary last finished.",
                                 registry=r)
        self.canary_interval = Gauge("slimlm_canary_interval_seconds", "Seconds between canary runs (0: off).",
                                     registry=r)
        self.canary_runs = Counter("slimlm_canary_runs_total", "Canary evaluations, by outcome.", ["outcome"],
                                   registry=r)
        self.canary_seconds = Gauge("slimlm_canary_duration_seconds", "Duration of the last canary run.",
                                    registry=r)
        self.shadow_ratio = Gauge("slimlm_shadow_sample_ratio", "Share of live requests scored by the teacher.",
                                  registry=r)
        self.shadow_top1 = Gauge("slimlm_shadow_top1_agreement_ratio", "Student-teacher top-1 agreement on sampled "
                                 "live traffic (recent window).", registry=r)
        self.shadow_kl = Gauge("slimlm_shadow_kl_divergence", "Mean KL(teacher || student) per token on sampled "
                               "live traffic (recent window), nats.", registry=r)
        self.shadow_scored = Counter("slimlm_shadow_scored_total", "Live requests scored by the teacher.", registry=r)
        self.shadow_dropped = Counter("slimlm_shadow_dropped_total", "Sampled requests not scored (queue full).",
                                      registry=r)
        self.cost = Gauge("slimlm_cost_usd_per_1k_requests", "Live cost per 1k requests (see docs/serving.md).",
                          registry=r)
        self.co2 = Gauge("slimlm_co2e_grams_per_request", "Live g CO2e per request.", registry=r)
        self.service = Gauge("slimlm_service_seconds_per_request", "Mean model-busy seconds per request, live.",
                             registry=r)
        for g in (self.canary_drop, self.canary_prefill, self.shadow_top1, self.shadow_kl, self.cost, self.co2,
                  self.service):
            g.set(NAN)
        self._busy: deque[float] = deque(maxlen=cost_window)
        self._lock = threading.Lock()
        self._price = self._grid = self._power = NAN

    def set_target(self, target: Target, settings) -> None:
        """Publish the operating point of ``target`` (after start-up and after every switch)."""
        d = target.decision or {}
        self.info.info(target.info())
        self.decision.set(target.number or 0)
        self.bound.set(_num(target.max_drop))
        self.recorded_drop.set(_num(target.recorded.get("quality_drop")))
        self.recorded_top1.set(_num(target.recorded.get("teacher_top1")))
        p50 = _num(target.recorded.get("latency_p50_ms")) / 1000
        self.recorded_prefill.set(p50)
        fc = d.get("forecast") or {}
        self.forecast_cost.set(_num(fc.get("usd_per_1k_requests")))
        self.forecast_co2.set(_num(fc.get("g_co2e_per_request")))
        slo50 = _num(d.get("max_latency_ms")) / 1000
        if settings.slo_p99_ms is not None:
            slo99 = settings.slo_p99_ms / 1000
        elif d.get("max_latency_ms") is not None:
            slo99 = slo50 * 4  # the decision's SLO is a p50 prefill bound; p99 of whole requests gets headroom
        else:
            slo99 = 4 * _num(fc.get("seconds_per_request"))
        self.slo.labels(quantile="0.5").set(slo50)
        self.slo.labels(quantile="0.99").set(slo99)
        inputs = d.get("inputs") or {}
        with self._lock:
            self._price, self._grid = _num(inputs.get("price_per_hour")), _num(inputs.get("grid_gco2_per_kwh"))
            self._power = _num(fc.get("busy_power_w"))
            self._busy.clear()  # live cost is of the model being served
        for g in (self.canary_drop, self.canary_prefill, self.shadow_top1, self.shadow_kl, self.cost, self.co2,
                  self.service):
            g.set(NAN)

    def observe_busy(self, seconds: float) -> None:
        """Add one request's model time and refresh the live cost and CO2e."""
        self.busy_seconds.inc(seconds)
        with self._lock:
            self._busy.append(seconds)
            t = sum(self._busy) / len(self._busy)
            price, grid, power = self._price, self._grid, self._power
        self.service.set(t)
        self.cost.set(1000 * t / 3600 * price)
        self.co2.set(power * t / 3.6e6 * grid)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
