"""Pareto front, hypervolume and selection against hand-worked examples."""

import math

import pytest

from slimlm.errors import ConfigError
from slimlm.search import (
    DEFAULT_MAX_OOD_DROP,
    TIERS,
    hypervolume,
    normalised_hypervolume,
    pareto_front,
    parse_drop,
    parse_ood_drop,
    select,
)

# (drop, latency): A and B and D are non-dominated; C is dominated by B; E has no latency; F duplicates B.
PTS = [
    {"quality_drop": 0.00, "latency_p50_ms": 100.0},  # A
    {"quality_drop": 0.01, "latency_p50_ms": 60.0},  # B
    {"quality_drop": 0.02, "latency_p50_ms": 70.0},  # C
    {"quality_drop": 0.05, "latency_p50_ms": 40.0},  # D
    {"quality_drop": 0.00, "latency_p50_ms": None},  # E
    {"quality_drop": 0.01, "latency_p50_ms": 60.0},  # F
]
OBJ = ["quality_drop", "latency_p50_ms"]


def test_front_known_points():
    assert pareto_front(PTS, OBJ) == [0, 1, 3, 5]


def test_front_reads_nested_metrics_and_skips_nan():
    pts = [{"metrics": {"a": 1.0, "b": 2.0}}, {"metrics": {"a": float("nan"), "b": 0.0}}, {"metrics": {"a": 2.0, "b": 1.0}}]
    assert pareto_front(pts, ["a", "b"]) == [0, 2]


def test_front_three_objectives():
    pts = [{"a": 1, "b": 1, "c": 3}, {"a": 1, "b": 2, "c": 1}, {"a": 2, "b": 2, "c": 3}]
    assert pareto_front(pts, ["a", "b", "c"]) == [0, 1]


def test_hypervolume_2d_by_hand():
    # Reference (0.1, 120). Staircase: A covers drop [0, .1] × lat [100, 120] = .1 × 20 = 2.0;
    # B adds drop [.01, .1] × [60, 100] = .09 × 40 = 3.6; D adds [.05, .1] × [40, 60] = .05 × 20 = 1.0.
    hv = hypervolume(PTS, OBJ, {"quality_drop": 0.1, "latency_p50_ms": 120.0})
    assert hv == pytest.approx(2.0 + 3.6 + 1.0)


def test_hypervolume_3d_inclusion_exclusion():
    pts = [{"a": 1, "b": 2, "c": 2}, {"a": 2, "b": 1, "c": 2}, {"a": 2, "b": 2, "c": 1}]
    # Each box is 2×1×1 = 2; pairwise overlaps 1 each; triple overlap 1: 6 − 3 + 1.
    assert hypervolume(pts, ["a", "b", "c"], [3, 3, 3]) == pytest.approx(4.0)


def test_hypervolume_4d_against_cell_count():
    import itertools
    import random

    rng = random.Random(0)
    keys = ["a", "b", "c", "d"]
    pts = [{k: rng.randrange(5) for k in keys} for _ in range(8)]
    # integer corners: the dominated volume is the number of unit cells whose lower corner some point reaches
    cells = sum(any(all(p[k] <= c[i] for i, k in enumerate(keys)) for p in pts)
                for c in itertools.product(range(5), repeat=4))
    assert hypervolume(pts, keys, [5, 5, 5, 5]) == pytest.approx(cells)


def test_hypervolume_ignores_points_beyond_reference():
    assert hypervolume([{"a": 5, "b": 0}], ["a", "b"], [4, 4]) == 0.0


def test_normalised_hypervolume_unit_free():
    vs = [{"id": "b", "is_baseline": True, "metrics": {"quality_drop": 0.0, "latency_p50_ms": 100.0}},
          {"id": "x", "metrics": {"quality_drop": 0.05, "latency_p50_ms": 50.0}}]
    # Scaled: baseline (0, 1) adds nothing; x at (0.5, 0.5) dominates 0.5 × 0.5 of the unit box.
    assert normalised_hypervolume(vs, OBJ) == pytest.approx(0.25)
    ms = [{**v, "metrics": {**v["metrics"], "latency_p50_ms": v["metrics"]["latency_p50_ms"] / 1000}} for v in vs]
    assert normalised_hypervolume(ms, OBJ) == pytest.approx(0.25)  # seconds or ms: same number
    assert normalised_hypervolume(vs[1:], OBJ) is None  # no baseline


@pytest.mark.parametrize("text,want", [("1%", 0.01), ("0.01", 0.01), (" 2.5 % ", 0.025), ("medium", 0.03), (0.005, 0.005)])
def test_parse_drop(text, want):
    assert parse_drop(text) == pytest.approx(want)


@pytest.mark.parametrize("text", ["3", "abc", "-1%", "nan"])
def test_parse_drop_rejects(text):
    with pytest.raises(ConfigError):
        parse_drop(text)


def _v(vid, drop, lat, disk=100.0, mem=500.0, base=False):
    return {"id": vid, "label": vid, "is_baseline": base,
            "metrics": {"quality_drop": drop, "latency_p50_ms": lat, "disk_mb": disk, "peak_rss_mb": mem}}


VS = [_v("base", 0.0, 100.0, 500.0, 900.0, base=True), _v("q8", 0.004, 70.0, 150.0, 500.0),
      _v("p", 0.008, 60.0, 400.0, 700.0), _v("pq", 0.025, 40.0, 120.0, 400.0), _v("big", 0.2, 20.0, 90.0, 300.0),
      _v("nolat", 0.001, None, 80.0, None)]


def test_select_per_tier():
    assert select(VS, max_drop=TIERS["critical"]).chosen["id"] == "q8"
    assert select(VS, max_drop=TIERS["high"]).chosen["id"] == "p"
    sel = select(VS, max_drop=TIERS["medium"])
    assert sel.met and sel.chosen["id"] == "pq" and sel.closest is None
    assert sel.rule == "fastest variant with quality drop ≤ 3%"


def test_select_other_objectives():
    assert select(VS, max_drop=0.01, objective="size").chosen["id"] == "nolat"  # 80 MB; latency unknown is fine
    assert select(VS, max_drop=0.01, objective="memory").chosen["id"] == "q8"


def test_select_slos_filter_and_rule_text():
    sel = select(VS, max_drop=0.03, max_latency_ms=65, max_memory_mb=600)
    assert sel.chosen["id"] == "pq"
    sel = select(VS, max_drop=0.03, max_latency_ms=65, max_memory_mb=450)
    assert sel.chosen["id"] == "pq"
    assert "p50 latency ≤ 65 ms" in sel.rule and "peak memory ≤ 450 MB" in sel.rule
    # unknown latency fails a latency SLO
    assert select(VS, max_drop=0.002, max_latency_ms=1000).chosen["id"] == "base"


def test_select_nothing_meets_the_bar():
    sel = select(VS, max_drop=0.03, max_latency_ms=30)
    assert not sel.met and sel.chosen is None
    assert sel.closest["id"] == "big"  # the only variant within the SLO
    assert "No variant meets the bar" in sel.reason
    sel = select(VS, max_drop=0.03, max_latency_ms=10)  # nothing meets the SLO either: smallest drop overall
    assert sel.closest["id"] == "base" and not sel.met


def test_select_keeps_baseline_when_nothing_beats_it():
    sel = select(VS[:1] + [_v("slow", 0.001, 120.0)], max_drop=0.01)
    assert sel.met and sel.chosen["is_baseline"] and "keep the baseline" in sel.reason


def test_select_perplexity_wording_and_bad_objective():
    vs = [{"id": "a", "is_baseline": True, "metrics": {"quality_drop": 0.0, "perplexity": 30.0, "latency_p50_ms": 1.0}}]
    assert select(vs, max_drop=0.01).rule == "fastest variant with perplexity drop ≤ 1%"
    with pytest.raises(ConfigError):
        select(vs, max_drop=0.01, objective="speed")
    assert not math.isnan(select(vs, max_drop=0.01).max_drop)


def _o(vid, drop, lat, ood, base=False):
    v = _v(vid, drop, lat, base=base)
    v["metrics"]["ood_quality_drop"] = ood
    v["metrics"]["ood_perplexity"] = None if ood is None else 20.0 * (1 + ood)
    return v


# pq wins in domain but ruins general text; q8 keeps it; "blind" has no out-of-domain measure
GUARDED = [_o("base", 0.0, 100.0, 0.0, base=True), _o("q8", 0.02, 60.0, 0.03), _o("pq", 0.025, 40.0, 1.2),
           _o("blind", 0.01, 30.0, None)]


def test_ood_guard_keeps_out_the_in_domain_winner_and_says_so():
    sel = select(GUARDED, max_drop=TIERS["medium"])  # default guard
    assert sel.chosen["id"] == "q8" and sel.met and sel.max_ood_drop == DEFAULT_MAX_OOD_DROP == 0.10
    assert sel.excluded["id"] == "blind"  # unknown out-of-domain drop fails the guard when the baseline was measured
    assert "out-of-domain quality drop ≤ 10%" in sel.rule
    assert "kept out blind" in sel.reason and "not measured" in sel.reason
    assert sel.to_dict()["excluded_by_guard"] == "blind" and sel.to_dict()["max_ood_drop"] == 0.10
    sel = select(GUARDED[:3], max_drop=TIERS["medium"], max_ood_drop=0.5)
    assert sel.chosen["id"] == "q8" and sel.excluded["id"] == "pq"
    assert "kept out pq," in sel.reason and "+120%" in sel.reason and "≤ 50%" in sel.reason
    assert "Out-of-domain guard: out-of-domain quality drop ≤ 50%" in sel.guard


def test_ood_guard_off_or_unmeasured_selects_on_domain_quality_alone():
    sel = select(GUARDED, max_drop=TIERS["medium"], max_ood_drop=None)
    assert sel.chosen["id"] == "blind" and sel.excluded is None and "out-of-domain" not in sel.rule
    assert "off" in sel.guard
    sel = select(GUARDED[:3], max_drop=TIERS["medium"], max_ood_drop=1.5)  # within a loose guard
    assert sel.chosen["id"] == "pq" and sel.excluded is None
    sel = select(VS, max_drop=TIERS["medium"])  # the run measured no out-of-domain quality: nothing to guard
    assert sel.chosen["id"] == "pq" and "not applied" in sel.guard and "out-of-domain" not in sel.rule


def test_ood_guard_applies_to_the_closest_variant_too():
    sel = select(GUARDED, max_drop=0.015, max_latency_ms=50)  # only pq and blind meet the SLO; both fail the guard
    assert not sel.met and sel.closest["id"] == "blind"  # nearest the bar among those meeting the SLO
    assert "none of them passes the out-of-domain guard" in sel.reason
    sel = select(GUARDED[:3], max_drop=0.015, max_latency_ms=70)
    assert not sel.met and sel.closest["id"] == "q8" and "among those meeting the SLOs and the out-of-domain guard" in sel.reason


@pytest.mark.parametrize("text,want", [("10%", 0.10), ("0.05", 0.05), (0.2, 0.2), ("none", None), ("off", None),
                                       (None, DEFAULT_MAX_OOD_DROP)])
def test_parse_ood_drop(text, want):
    assert parse_ood_drop(text) == want


@pytest.mark.parametrize("text", ["medium", "lots", "5", "-1%"])
def test_parse_ood_drop_rejects_with_the_option_name(text):
    with pytest.raises(ConfigError, match="--max-ood-drop"):
        parse_ood_drop(text)


def _per_corpus(v, **drops):
    v["metrics"]["ood"] = {c.replace("_", "-"): {"perplexity": 20.0 * (1 + d), "quality_drop": d} for c, d in drops.items()}
    v["metrics"]["ood_quality_drop"] = max(drops.values())
    return v


def test_ood_guard_over_several_corpora_names_them_and_the_worst():
    vs = [_per_corpus(_o("base", 0.0, 100.0, 0.0, base=True), pydoc=0.0, rotten_tomatoes=0.0),
          _per_corpus(_o("q8", 0.02, 60.0, 0.03), pydoc=0.01, rotten_tomatoes=0.03),
          _per_corpus(_o("pq", 0.025, 40.0, 0.45), pydoc=0.08, rotten_tomatoes=0.45)]  # fine on pydoc alone
    sel = select(vs, max_drop=TIERS["medium"])
    assert sel.chosen["id"] == "q8" and sel.excluded["id"] == "pq"
    assert "out-of-domain quality drop ≤ 10% on each of pydoc, rotten-tomatoes" in sel.rule
    assert "on each of pydoc, rotten-tomatoes" in sel.guard
    assert "+45% on rotten-tomatoes" in sel.reason


@pytest.mark.parametrize("guard", [None, 0.05, 0.1, 1.0, 2.0])
def test_a_parsed_guard_passed_on_reads_back_the_same(guard):
    from slimlm.search.frontier import ood_guard_option

    assert parse_ood_drop(ood_guard_option(guard)) == guard  # 2.0 as a number would read as ambiguous
