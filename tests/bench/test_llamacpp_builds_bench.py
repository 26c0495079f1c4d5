"""bench/llamacpp_builds.py end to end on a tiny model: two builds (here two handles on xllamacpp's library)
interleaved in one process, results written with per-build figures and ratios; bad --lib input is one error."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "llamacpp_builds.py"
pytestmark = pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None,
                                reason="llama.cpp not installed: pip install 'slimlm[export]'")


@pytest.fixture
def bench(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("llamacpp_builds_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    monkeypatch.delenv("SLIMLM_LLAMACPP_LIB", raising=False)
    import torch

    threads = torch.get_num_threads()
    yield mod
    torch.set_num_threads(threads)  # the benchmark sets its own thread count


def test_two_builds_are_measured_side_by_side(bench, monkeypatch, tmp_path):
    import xllamacpp

    lib = xllamacpp.xllamacpp.__file__
    monkeypatch.setattr("sys.argv", ["llamacpp_builds.py", "--quick", "--lib", "wheel=xllamacpp", "--lib",
                                     f"same={lib}", "--types", "q8_0"])
    assert bench.main() == 0
    res = json.loads((tmp_path / "llamacpp-builds-quick.json").read_text())
    assert list(res["builds"]) == ["wheel", "same"] and "AVX" in res["builds"]["same"]["kernels"]
    (row,) = res["rows"]
    assert row["type"] == "q8_0" and row["disk_mb"] > 0
    ref, other = row["builds"]["wheel"], row["builds"]["same"]
    assert ref["decode_x"] == 1.0 and ref["prefill_x"] == 1.0  # the first build is the reference
    assert other["decode_tok_s"] > 0 and other["prefill_ms"] > 0
    lo, hi = other["decode_x_range"]
    assert lo <= other["decode_x"] <= hi
    md = (tmp_path / "llamacpp-builds-quick.md").read_text()
    assert "same vs wheel: decode (range)" in md and "| teacher | q8_0 |" in md


def test_bad_lib_arguments_are_one_error(bench, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("sys.argv", ["llamacpp_builds.py", "--quick", "--lib", "only=xllamacpp"])
    assert bench.main() == 2
    assert capsys.readouterr().err.startswith("error: give at least two --lib")
    monkeypatch.setattr("sys.argv", ["llamacpp_builds.py", "--quick", "--lib", "a=xllamacpp", "--lib",
                                     f"b={tmp_path / 'missing.so'}"])
    assert bench.main() == 2
    assert "no such file" in capsys.readouterr().err
    assert not list(tmp_path.glob("llamacpp-builds*"))
