"""bench/int8_fallback.py end to end on a tiny model: every row measured in the same rounds, the integer
kernels give identical logits, and the process's kernel choice is put back afterwards."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "int8_fallback.py"


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("int8_fallback_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    threads = torch.get_num_threads()
    yield mod
    torch.set_num_threads(threads)  # the benchmark sets its own thread count


def test_fallback_rows_are_measured_side_by_side_and_the_kernel_choice_is_restored(bench, tmp_path):
    from slimlm.models import qlayers

    before_fn, before_fast = qlayers.int8_float_matmul, qlayers.int8_matmul_is_fast()
    out = tmp_path / "fb.json"
    bench.main(["--quick", "--out", str(out)])
    res = json.loads(out.read_text())
    labels = [r["row"] for r in res["rows"]]
    assert labels[0] == "fp32"
    for v in ("int8-dynamic", "int8-dynamic + lm_head"):
        assert f"{v}, fallback before" in labels and f"{v}, fallback now" in labels
        assert (f"{v}, int8 kernel" in labels) == res["native_int8_kernel_fast"]
    assert {"int8-weight, before", "int8-weight, now"} <= set(labels)
    assert all(r["prefill_ms"] > 0 and r["decode_tok_s"] > 0 for r in res["rows"])
    assert res["logits_identical_across_int8_dynamic_kernels"] == {"int8-dynamic": True,
                                                                   "int8-dynamic + lm_head": True}
    assert [t["target"] for t in res["targets"]] == [t[0] for t in bench.TARGETS]
    assert res["machine"]["cores"] >= 1 and len(res["load_before"]) == 3
    md = out.with_suffix(".md").read_text()
    assert "| fp32 | fp32 | - |" in md and "Targets:" in md
    assert qlayers.int8_float_matmul is before_fn and qlayers.int8_matmul_is_fast() == before_fast
