"""Business translation: measured speed and energy → cost per request, cost per month, CO2e per year.

The model is deliberately simple, so a reader can check every number by hand (all inputs are shown in
the report). One machine serves one request at a time with the thread count the profile used; a request
is ``prefill_tokens`` of prompt plus ``decode_tokens`` generated one by one:

    seconds/request   t = p50(B×S) / 1000 × prefill_tokens / (B·S) + decode_tokens / decode_tok_per_s
    machine-hours/mo  H = traffic_per_day × 365/12 × t / 3600
    USD/month         H × price_per_hour;   USD per 1k requests = 1000 × t / 3600 × price_per_hour
    busy power (W)    P = energy_j_per_1k_tokens / 1000 × Σ_shapes(B·S) / Σ_shapes(p50 / 1000)
    J/request         E = P × t
    kWh/year          E × traffic_per_day × 365 / 3.6e6;   kg CO2e/year = kWh/year × grid_gco2_per_kwh / 1000

Busy power comes from the prefill energy measurement (``slimlm profile`` meters the timed prefill runs, the
same number of runs per shape, so total tokens / total time is Σ tokens / Σ p50); it is applied to the decode
time too, because a machine decoding is as busy as one prefilling. Decode is left out (prefill only) when
no variant has a decode speed, as for encoders. Savings are baseline − variant, so positive means cheaper.
It ignores batching, idle machines and memory-bound scaling: real fleets cost more, but the ratios hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from slimlm.runs import Metrics, Variant
from slimlm.search.frontier import value

DAYS_PER_MONTH = 365 / 12
J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Inputs:
    """The assumptions behind the money and CO2e figures (all shown in the report).

    Attributes:
        traffic_per_day: requests per day.
        price_per_hour: USD per machine-hour.
        grid_gco2_per_kwh: grid carbon intensity, g CO2e per kWh (475: IEA world average).
        prefill_tokens: prompt tokens per request.
        decode_tokens: generated tokens per request.
        primary_shape: the profile shape ``BxS`` whose p50 sets the prefill time.
    """

    traffic_per_day: float = 100_000
    price_per_hour: float = 0.10
    grid_gco2_per_kwh: float = 475.0
    prefill_tokens: int = 128
    decode_tokens: int = 64
    primary_shape: str = "1x128"


def _shape_tokens(shape: str) -> int | None:
    try:
        b, s = (int(x) for x in shape.lower().split("x"))
        return b * s
    except ValueError:
        return None


def _p50_s(m: Metrics, shape: str) -> float | None:
    lat = m.latency_ms.get(shape)
    return lat.p50 / 1000 if lat is not None and lat.p50 is not None else None


def seconds_per_request(metrics: Metrics, inp: Inputs, *, with_decode: bool = True) -> float | None:
    """Service time of one request on one machine (see the module docstring), or None if not measured."""
    tokens = _shape_tokens(inp.primary_shape)
    p50 = _p50_s(metrics, inp.primary_shape)
    if p50 is None and value(metrics, "latency_p50_ms") is not None:
        p50 = value(metrics, "latency_p50_ms") / 1000
    if p50 is None or not tokens:
        return None
    t = p50 * inp.prefill_tokens / tokens
    if with_decode and inp.decode_tokens:
        tps = value(metrics, "decode_tokens_per_s")
        if not tps:
            return None
        t += inp.decode_tokens / tps
    return t


def busy_power_w(metrics: Metrics) -> float | None:
    """Average power while serving: prefill joules per token × prefill tokens per second, over all shapes."""
    e1k = value(metrics, "energy_j_per_1k_tokens")
    tokens = secs = 0.0
    for shape in metrics.latency_ms:
        n, p50 = _shape_tokens(shape), _p50_s(metrics, shape)
        if n and p50:
            tokens, secs = tokens + n, secs + p50
    if e1k is None or not secs:
        return None
    return e1k / 1000 * tokens / secs


def translate(metrics: Metrics, inp: Inputs, *, with_decode: bool = True) -> dict:
    """Money and CO2e for one variant's metrics; a figure is None when its inputs were not measured."""
    t = seconds_per_request(metrics, inp, with_decode=with_decode)
    p = busy_power_w(metrics)
    out: dict[str, float | None] = dict.fromkeys(
        ("seconds_per_request", "requests_per_hour", "usd_per_1k_requests", "machine_hours_per_month",
         "usd_per_month", "busy_power_w", "j_per_request", "kwh_per_year", "kg_co2e_per_year"))
    out["busy_power_w"] = p
    if t is None:
        return out
    hours = inp.traffic_per_day * DAYS_PER_MONTH * t / 3600
    out.update(seconds_per_request=t, requests_per_hour=3600 / t, usd_per_1k_requests=1000 * t / 3600 * inp.price_per_hour,
               machine_hours_per_month=hours, usd_per_month=hours * inp.price_per_hour)
    if p is not None:
        kwh = p * t * inp.traffic_per_day * 365 / J_PER_KWH
        out.update(j_per_request=p * t, kwh_per_year=kwh, kg_co2e_per_year=kwh * inp.grid_gco2_per_kwh / 1000)
    return out


def business_table(variants: Sequence[Variant], inp: Inputs) -> dict[str, dict]:
    """`translate` for every variant, plus savings against the baseline.

    Returns:
        ``{variant id: {...translate keys, "savings_pct", "savings_usd_per_month", "savings_kg_co2e_per_year",
        "prefill_only"}}``; savings are None without a measured baseline.
    """
    with_decode = any(value(v, "decode_tokens_per_s") for v in variants)
    rows = {str(v.id): translate(v.metrics, inp, with_decode=with_decode) for v in variants}
    base = next((rows[str(v.id)] for v in variants if v.is_baseline), None)
    for row in rows.values():
        b_usd, usd = (base or {}).get("usd_per_month"), row["usd_per_month"]
        b_co2, co2 = (base or {}).get("kg_co2e_per_year"), row["kg_co2e_per_year"]
        row["savings_pct"] = 1 - usd / b_usd if usd is not None and b_usd else None
        row["savings_usd_per_month"] = b_usd - usd if usd is not None and b_usd is not None else None
        row["savings_kg_co2e_per_year"] = b_co2 - co2 if co2 is not None and b_co2 is not None else None
        row["prefill_only"] = not with_decode
    return rows
