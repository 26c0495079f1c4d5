"""The typed run directory: round trip without loss, merging writers, alignment once on write, clear errors."""

import json

import pytest

from slimlm.runs import Latency, Metrics, RunDir, RunDirError, Variant


def _v(vid, p50, speedup, base=False, **extra):
    return Variant.from_dict({"id": vid, "is_baseline": base, "metrics": {
        "latency_ms": {"1x128": {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.2, "session": "s"}},
        "ratios": {"prefill_speedup_1x128": speedup}, **extra}})


def test_round_trip_keeps_unknown_fields():
    d = {"id": "a", "label": "x", "parent": None, "stages": [{"kind": "prune", "config": {"method": "wanda"}}],
         "path": "cache/a", "is_baseline": False, "recovery": {"tokens": 5, "seconds": 1.0}, "curves": {},
         "seconds": 2.0, "metrics": {"perplexity": 3.0, "a_future_metric": {"x": 1},
                                     "latency_ms": {"1x128": {"p50": 1.0, "mean": 1.1}}}}
    v = Variant.from_dict(d)
    assert v.metrics.perplexity == 3.0 and v.metrics.extra == {"a_future_metric": {"x": 1}}
    assert isinstance(v.metrics.latency_ms["1x128"], Latency) and v.metrics.latency_ms["1x128"].extra == {"mean": 1.1}
    again = v.to_dict()
    assert again["metrics"]["a_future_metric"] == {"x": 1} and again["metrics"]["latency_ms"]["1x128"]["mean"] == 1.1
    assert Variant.from_dict(again).to_dict() == again


def test_writers_merge_and_keep_each_others_measurements(tmp_path):
    run = RunDir(tmp_path)
    a = Variant.from_dict({"id": "a", "metrics": {"perplexity": 10.0}})
    run.write_variants([Variant("b", is_baseline=True, metrics=Metrics(perplexity=9.0)), a])
    other = Variant.from_dict({"id": "a", "metrics": {"disk_mb": 5.0}})  # another worker measured size only
    run.write_variants([other, Variant("c")])
    got = {v.id: v for v in run.variants()}
    assert list(got) == ["b", "a", "c"]  # baseline first, then in writing order
    assert got["a"].metrics.perplexity == 10.0 and got["a"].metrics.disk_mb == 5.0


def test_alignment_happens_once_on_write(tmp_path):
    run = RunDir(tmp_path)
    rows = run.write_variants([_v("b", 200.0, 1.0, base=True), _v("q", 400.0, 2.0)])  # timed when twice as slow
    q = next(v for v in rows if v.id == "q")
    lat = q.metrics.latency_ms["1x128"]
    assert lat.p50 == pytest.approx(100.0) and lat.measured_p50 == 400.0 and lat.p99 == pytest.approx(120.0)
    assert q.metrics.latency_p50_ms == pytest.approx(100.0)
    run.write_variants(run.variants())  # idempotent
    lat2 = run.variant("q").metrics.latency_ms["1x128"]
    assert lat2.p50 == pytest.approx(100.0) and lat2.measured_p50 == 400.0


def test_corrupt_files_fail_with_the_file_and_line(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(RunDirError, match="no variants.jsonl"):
        run.variants(required=True)
    (tmp_path / "variants.jsonl").write_text(json.dumps({"id": "a"}) + "\n{not json\n")
    with pytest.raises(RunDirError, match="line 2 is not valid JSON"):
        run.variants()
    (tmp_path / "variants.jsonl").write_text(json.dumps([1, 2]) + "\n")
    with pytest.raises(RunDirError, match="line 1 is not a variant"):
        run.variants()
    (tmp_path / "variants.jsonl").write_text(json.dumps({"id": 5}) + "\n")  # an id that is not a string
    with pytest.raises(RunDirError, match="line 1 is not a variant"):
        run.variants()
    (tmp_path / "run.json").write_text("[]")
    with pytest.raises(RunDirError, match="not a JSON object"):
        run.info()


def test_update_info_keeps_what_others_set(tmp_path):
    run = RunDir(tmp_path)
    run.update_info({"model": "m", "selection": {"tier": "high"}})
    first = run.info()
    run.update_info({"model": "m", "recipes": ["a"]}, keep=("selection",))
    info = run.info()
    assert info["selection"] == {"tier": "high"} and info["recipes"] == ["a"] and info["created"] == first["created"]
