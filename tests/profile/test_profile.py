import pytest

from slimlm.errors import ConfigError
from slimlm.models import load, save
from slimlm.profile import compare, parse_shapes, prefill_flops, profile
from slimlm.profile.core import _percentiles

KEYS = {"model", "params", "nonzero_params", "disk_mb", "peak_rss_mb", "latency_ms", "decode_tokens_per_s",
        "energy_j_per_1k_tokens", "roofline", "machine"}


def test_profile_has_every_design_key():
    r = profile(load("tiny:llama"), shapes=((1, 16), (2, 16)), decode_tokens=4, repeats=3)
    assert KEYS <= r.keys()
    assert set(r["latency_ms"]) == {"1x16", "2x16"}
    assert {"p50", "p90", "p99"} <= r["latency_ms"]["1x16"].keys()
    assert r["latency_ms"]["1x16"]["p50"] <= r["latency_ms"]["1x16"]["p99"]
    assert r["params"] == load("tiny:llama").num_params()
    assert 0 < r["disk_mb"] < 5 and r["peak_rss_mb"] > 50
    assert r["decode_tokens_per_s"] > 0 and r["energy_source"].startswith(("estimated", "measured"))
    assert r["roofline"]["peak_gflops"] > 0 and 0 < r["roofline"]["prefill_share"]["2x16"]


def test_compare_reports_ratios_against_first():
    big, small = load("tiny:llama?layers=4"), load("tiny:llama?layers=2")
    a, b = compare([big, small], shapes=((1, 32),), decode_tokens=0, repeats=3, memory=False)
    assert a["ratios"]["params"] == 1.0 and b["ratios"]["params"] < 0.7
    assert b["ratios"]["flops_1x32"] == pytest.approx(prefill_flops(small, 1, 32) / prefill_flops(big, 1, 32))
    assert b["ratios"]["flops_1x32"] < 0.6
    assert "prefill_speedup_1x32" in b["ratios"]
    assert a["peak_rss_mb"] is None and a["disk_mb"] is None  # no probe, and nothing saved to measure


def test_without_the_memory_probe_a_saved_variant_still_reports_its_size_on_disk(tmp_path):
    save(load("tiny:llama?layers=4"), tmp_path / "big")
    save(load("tiny:llama?layers=2"), tmp_path / "small")
    a, b = compare([load(tmp_path / "big"), load(tmp_path / "small")], shapes=((1, 8),), decode_tokens=0,
                   repeats=1, memory=False)
    assert a["peak_rss_mb"] is None and 0 < b["disk_mb"] < a["disk_mb"] and b["ratios"]["disk"] < 0.8


def test_flops_formula_on_known_shapes():
    m = load("tiny:llama?layers=1&hidden=64&heads=4&kv_heads=2&ffn=128")
    # per token: q 64x64, k,v 64x32 each, o 64x64, gate/up 64x128, down 128x64, head 64x260
    linear = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128 + 64 * 260
    assert prefill_flops(m, 2, 10) == 2 * 2 * 10 * linear + 2 * 4 * 10 * 10 * 64


def test_parse_shapes_and_errors():
    assert parse_shapes("1x128, 8x128") == ((1, 128), (8, 128))
    for bad in ("1x", "ax3", "0x8", ""):
        with pytest.raises(ConfigError, match="--shapes"):
            parse_shapes(bad)


def test_percentiles_interpolate():
    p = _percentiles([0.001 * i for i in range(1, 101)])
    assert p["p50"] == pytest.approx(50.5) and p["p90"] == pytest.approx(90.1) and p["n"] == 100


def test_compare_times_an_attached_runner_without_asking_its_truth_value():
    from slimlm.models import load
    from slimlm.profile import compare

    m = load("tiny:llama")
    calls = []

    class Runner:  # like torch.compile's OptimizedModule: callable, and len() raises
        def __len__(self):
            raise TypeError("LlamaForCausalLM does not support len()")

        def __call__(self, ids, **kw):
            calls.append(ids.shape)
            return m.hf(ids, **kw)

    m.runner = Runner()
    res = compare([m], shapes=((1, 8),), decode_tokens=0, repeats=2, warmup=1, memory=False)
    assert res[0]["latency_ms"]["1x8"]["p50"] > 0
    assert len(calls) == 3  # warm-up + 2 timed prefills went through the runner


def test_the_memory_probe_imports_nothing_from_the_working_directory(tmp_path, monkeypatch):
    """A user working inside a model directory: its .py files must not run without --trust-remote-code
    (`python -m` would put the directory first on sys.path, and the probe imports argparse)."""
    from slimlm.profile.memprobe import run_probe

    marker = tmp_path / "ran"
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "argparse.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.chdir(tmp_path / "model")
    res = run_probe("slimlm.profile.memprobe", [str(tmp_path / "missing")])
    assert res["peak_rss_mb"] is None and res["error"]  # the probe ran, on a path that is not a model
    assert "argparse" not in res["error"][0] and not marker.exists()
