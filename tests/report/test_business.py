"""Business figures against hand computation."""

import pytest

from slimlm.report.business import Inputs, business_table, busy_power_w, seconds_per_request, translate
from slimlm.runs import Metrics, Variant


def _m(p50_1, p50_8, decode, e1k):
    return Metrics.from_dict({"latency_ms": {"1x128": {"p50": p50_1}, "8x128": {"p50": p50_8}},
                              "latency_p50_ms": p50_1, "decode_tokens_per_s": decode,
                              "energy_j_per_1k_tokens": e1k})


BASE = _m(100.0, 600.0, 20.0, 10.0)
FAST = _m(50.0, 300.0, 40.0, 5.0)


def test_seconds_per_request_by_hand():
    # 0.1 s for 128 prompt tokens + 64 / 20 = 3.2 s decode
    assert seconds_per_request(BASE, Inputs()) == pytest.approx(0.1 + 3.2)
    # 256 prompt tokens at 1x128 scale linearly; no decode
    assert seconds_per_request(BASE, Inputs(prefill_tokens=256, decode_tokens=0)) == pytest.approx(0.2)
    assert seconds_per_request(Metrics(), Inputs()) is None


def test_busy_power_by_hand():
    # 10 J per 1k tokens; 128 + 1024 tokens in 0.1 + 0.6 s → 1152 / 0.7 tok/s → 10/1000 × 1645.7 = 16.457 W
    assert busy_power_w(BASE) == pytest.approx(10 / 1000 * 1152 / 0.7)


def test_translate_by_hand():
    inp = Inputs(traffic_per_day=100_000, price_per_hour=0.10, grid_gco2_per_kwh=475)
    r = translate(BASE, inp)
    t = 3.3
    assert r["requests_per_hour"] == pytest.approx(3600 / t)
    assert r["usd_per_1k_requests"] == pytest.approx(1000 * t / 3600 * 0.10)
    hours = 100_000 * 365 / 12 * t / 3600
    assert r["usd_per_month"] == pytest.approx(hours * 0.10)
    kwh = busy_power_w(BASE) * t * 100_000 * 365 / 3.6e6
    assert r["kwh_per_year"] == pytest.approx(kwh)
    assert r["kg_co2e_per_year"] == pytest.approx(kwh * 475 / 1000)


def test_savings_against_baseline():
    vs = [Variant("b", is_baseline=True, metrics=BASE), Variant("f", metrics=FAST), Variant("x")]
    rows = business_table(vs, Inputs())
    b, f = rows["b"], rows["f"]
    assert f["savings_pct"] == pytest.approx(1 - f["usd_per_month"] / b["usd_per_month"])
    assert f["savings_pct"] == pytest.approx(1 - (0.05 + 1.6) / 3.3)  # half the time everywhere
    assert f["savings_usd_per_month"] == pytest.approx(b["usd_per_month"] - f["usd_per_month"])
    assert f["savings_kg_co2e_per_year"] == pytest.approx(b["kg_co2e_per_year"] - f["kg_co2e_per_year"])
    assert b["savings_pct"] == 0 and rows["x"]["usd_per_month"] is None and rows["x"]["savings_pct"] is None


def test_prefill_only_when_no_decode_measured():
    enc = Metrics.from_dict({**BASE.to_dict(), "decode_tokens_per_s": None})
    rows = business_table([Variant("e", is_baseline=True, metrics=enc)], Inputs())
    assert rows["e"]["prefill_only"] and rows["e"]["seconds_per_request"] == pytest.approx(0.1)
