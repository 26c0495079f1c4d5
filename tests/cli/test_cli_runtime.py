"""`compress --runtime`: latencies measured on a deployment runtime, what a run records about it, and the
refusals (missing package, objectives the runtime cannot measure, a resumed run on another runtime)."""

import importlib
import importlib.util
import json

import pytest

from slimlm.cli.main import main

INT8 = "name: int8\nstages:\n  - quantize: {scheme: int8-dynamic}\n"
INT4 = "name: int4\nstages:\n  - quantize: {scheme: int4-weight, group_size: 16, method: rtn}\n"
cpu = importlib.import_module("slimlm.profile.cpu")  # the module (``slimlm.profile`` is also a callable verb)
NO_VNNI = {"fast": False, "isa": "x86", "instructions": [], "torch_capability": "AVX2"}


def _args(tmp_path, text_file, out, *extra):
    (tmp_path / "int8.yaml").write_text(INT8)
    (tmp_path / "int4.yaml").write_text(INT4)
    return ["compress", "tiny:llama?layers=1", "--recipe", str(tmp_path / "int8.yaml"), "--recipe",
            str(tmp_path / "int4.yaml"), "--data", str(text_file), "--ood-data", "none", "--out", str(out),
            "--eval-tokens", "128", "--seq-len", "32", "--shapes", "1x16", "--repeats", "2",
            "--max-drop", "50%", *extra]


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                    reason="onnxruntime not installed: pip install 'slimlm[export]'")
def test_compress_on_onnxruntime_records_runtime_types_and_keeps_int4_out(capsys, tmp_path, text_file, monkeypatch):
    monkeypatch.setattr(cpu, "int8_gemm_support", lambda cpuinfo=None: NO_VNNI)
    out = tmp_path / "run"
    # size objective: the int4 variant is the smallest on disk and would win if it were a candidate
    code = main(_args(tmp_path, text_file, out, "--runtime", "onnxruntime", "--objective", "size", "--json"))
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    by_label = {v["label"].split()[0] if not v["is_baseline"] else "base": v for v in data["variants"]}
    base, int8, int4 = by_label["base"]["metrics"], by_label["int8-dynamic"]["metrics"], by_label["int4-weight"]["metrics"]
    # the fp32 baseline and the int8 variant ran on ONNX Runtime, each as its own type, checked on the way out
    assert (base["runtime"], base["runtime_format"], base["runtime_precision"]) == ("onnxruntime", "onnx", "fp32")
    assert (int8["runtime"], int8["runtime_precision"]) == ("onnxruntime", "int8")
    assert base["latency_p50_ms"] > 0 and int8["latency_p50_ms"] > 0 and int8["ratios"]["prefill_speedup_1x16"] > 0
    assert abs(int8["runtime_check"]["relative_change"]) <= int8["runtime_check"]["tolerance"]
    assert base["threads"] == 1 and int8["decode_tokens_per_s"] > 0  # the KV graph
    assert base["peak_rss_mb"] > 0 and int8["peak_rss_mb"] > 0 and int4["peak_rss_mb"] is None  # own processes
    assert base["energy_j_per_1k_tokens"] > 0 and int8["energy_source"] and int4["energy_j_per_1k_tokens"] is None
    assert int8["runtime_disk_mb"] < base["runtime_disk_mb"]
    # int4 has no ONNX equivalent: not measured (no torch fallback), and neither selected nor on the frontier
    assert int4["latency_p50_ms"] is None and int4["latency_ms"] == {}
    assert "int4-weight" in int4["runtime_not_measured"] and "onnxruntime" in int4["runtime_not_measured"]
    int4_id = by_label["int4-weight"]["id"]
    assert data["selected"] == by_label["int8-dynamic"]["id"] and int4_id not in data["frontier"]
    assert data["runtime"]["name"] == "onnxruntime" and data["runtime"]["threads"] == 1
    assert int4_id in data["runtime"]["not_measured"]
    assert any("VNNI/AMX" in w for w in data["warnings"])
    # what the run directory keeps: the runtime in run.json, the exports, the report naming the runtime
    info = json.loads((out / "run.json").read_text())
    assert info["options"]["runtime"] == "onnxruntime" and info["runtime"] == {"name": "onnxruntime", "threads": 1}
    assert info["machine"]["int8_gemm"]["fast"] is False
    exports = sorted(p.name for p in (out / "exports").iterdir())
    assert len(exports) == 2 and all(p.endswith("-onnxruntime") for p in exports)
    html = (out / "report.html").read_text()
    assert 'id="runtime">ONNX Runtime</strong>, 1 thread' in html and "not measured on onnxruntime" in html
    assert "int8 GEMMs on this CPU have no VNNI/AMX" in html
    decision = (out / "decision.md").read_text()
    assert "Latency measured on: ONNX Runtime (`--runtime onnxruntime`, 1 thread(s)); this variant ran as onnx int8" in decision

    # resuming reuses the exports (same weights, same type, check passed) instead of writing them again
    stamps = {p.name: (p / "export.json").stat().st_mtime_ns for p in (out / "exports").iterdir()}
    assert main(_args(tmp_path, text_file, out, "--runtime", "onnxruntime", "--objective", "size", "--json")) == 0
    capsys.readouterr()
    assert {p.name: (p / "export.json").stat().st_mtime_ns for p in (out / "exports").iterdir()} == stamps

    # another runtime on the same run directory is refused before any work
    assert main(_args(tmp_path, text_file, out, "--runtime", "torch")) == 2
    err = capsys.readouterr().err
    assert "--runtime onnxruntime" in err and "Traceback" not in err


def test_llamacpp_without_its_package_is_one_error_line_before_any_work(capsys, tmp_path, text_file, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else real(name, *a))
    out = tmp_path / "run"
    code = main(_args(tmp_path, text_file, out, "--runtime", "llamacpp"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and len(err.splitlines()) == 1
    assert "xllamacpp" in err and not out.exists()


def test_runtime_refuses_unknown_names_before_any_work(capsys, tmp_path, text_file):
    assert main(_args(tmp_path, text_file, tmp_path / "b", "--runtime", "tensorrt")) == 2
    assert "unknown runtime 'tensorrt'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_quantize_int8_dynamic_warns_once_on_a_cpu_without_vnni(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cpu, "int8_gemm_support", lambda cpuinfo=None: NO_VNNI)
    code = main(["quantize", "tiny:llama?layers=1", "--scheme", "int8-dynamic", "--out", str(tmp_path / "q"), "--json"])
    cap = capsys.readouterr()
    assert code == 0 and json.loads(cap.out)["warnings"] == [
        "int8 GEMMs on this CPU have no VNNI/AMX: expect int8-dynamic prefill to be slower than fp32 here "
        "(decode may still gain: profile it)"]
    assert cap.err.count("no VNNI/AMX") == 1


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                    reason="onnxruntime not installed: pip install 'slimlm[export]'")
def test_a_variant_whose_export_fails_its_check_is_not_measured_and_never_selected(capsys, tmp_path, text_file,
                                                                                    monkeypatch):
    from slimlm.export.check import ExportCheckError

    rts = importlib.import_module("slimlm.export.runtimes")
    failed = {"variant_perplexity": 50.0, "export_perplexity": 90.0, "relative_change": 0.8, "tolerance": 0.1,
              "passed": False}

    def fake_export(model, runtime, out, *, precision=None, check=False, **kw):  # no conversion: logic only
        assert check, "compress checks every export"
        if precision == "int8":
            raise ExportCheckError.with_result(failed, "int8 export off by +80%")
        return {"out": str(out), "format": "onnx", "precision": precision, "main_file": str(out / "m.onnx"),
                "files": {"m.onnx": 10**6}, "check": None, "reused": False}

    def fake_compare(models, runtime, *, exports, **kw):
        return [{"latency_ms": {"1x16": {"p50": 1.0, "p90": 1.1, "p99": 1.2, "n": 2}}, "decode_tokens_per_s": None,
                 "ratios": {"prefill_speedup_1x16": 1.0}, "threads": 1, "format": "onnx", "precision": e["precision"],
                 "disk_mb": 1.0, "peak_rss_mb": None, "energy_j_per_1k_tokens": None, "co2e_g_per_1k_tokens": None,
                 "energy_source": None, "check": None} for e in exports]

    monkeypatch.setattr(rts, "runtime_export", fake_export)
    monkeypatch.setattr(rts, "compare_runtime", fake_compare)
    args = _args(tmp_path, text_file, tmp_path / "run", "--runtime", "onnxruntime", "--objective", "size", "--json")
    del args[4:6]  # the int8 recipe only
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    int8 = next(v for v in data["variants"] if not v["is_baseline"])
    why = int8["metrics"]["runtime_not_measured"]
    assert "+80.0%" in why and "check sample" in why and int8["metrics"]["latency_p50_ms"] is None
    assert data["selected"] == data["variants"][0]["id"]  # the smaller int8 variant cannot be deployed there


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None,
                    reason="openvino/nncf not installed: pip install 'slimlm[export]'")
def test_export_openvino_int4_json_is_the_only_thing_on_stdout(capsys, tmp_path):
    from slimlm.cli.main import main

    code = main(["export", "tiny:llama?layers=1", "--format", "openvino", "--type", "int4", "--out",
                 str(tmp_path / "ov"), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    res = json.loads(out)  # NNCF's bit-width table and progress bar went to stderr
    assert res["check"]["passed"] and res["data_aware"][0] == "awq+scale_estimation"


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                    reason="openvino not installed: pip install 'slimlm[export]'")
def test_compress_times_an_encoder_on_openvino_and_llamacpp_refuses_it(capsys, tmp_path):
    (tmp_path / "int8w.yaml").write_text("name: int8w\nstages:\n  - quantize: {scheme: int8-weight}\n")
    args = ["compress", "tiny:bert?labels=6", "--recipe", str(tmp_path / "int8w.yaml"), "--data", "shakespeare-genre",
            "--shapes", "1x16", "--repeats", "2", "--max-drop", "50%", "--json"]
    assert main([*args, "--out", str(tmp_path / "run"), "--runtime", "openvino"]) == 0
    data = json.loads(capsys.readouterr().out)
    base, int8 = (v["metrics"] for v in sorted(data["variants"], key=lambda v: not v["is_baseline"]))
    assert (base["runtime_precision"], int8["runtime_precision"]) == ("fp32", "int8")
    assert base["latency_p50_ms"] > 0 and int8["latency_p50_ms"] > 0 and int8["decode_tokens_per_s"] is None
    # a classifier's export is checked on its logits, not perplexity, and the run keeps those figures
    assert int8["runtime_check"]["metric"] == "logits" and int8["runtime_check"]["argmax_agreement"] >= 0.75
    assert int8["runtime_check"]["relative_logit_diff"] <= int8["runtime_check"]["tolerance"]
    assert int8["runtime_inference_precision"] in ("f32", "bf16", "f16")
    assert "top class agrees on" in (tmp_path / "run" / "report.html").read_text()
    if importlib.util.find_spec("xllamacpp") is not None:  # without it the missing package is the error
        assert main([*args, "--out", str(tmp_path / "g"), "--runtime", "llamacpp"]) == 2
        err = capsys.readouterr().err
        assert "encoder" in err and "onnxruntime, openvino" in err and "Traceback" not in err


def test_runtime_profile_table_shows_energy_with_its_ratio():
    from rich.console import Console

    from slimlm.cli.profile_cmd import _runtime_table

    def row(name, joules, ratio=None):
        return {"model": name, "runtime": "onnxruntime", "format": "onnx", "threads": 1, "precision": "fp32",
                "disk_mb": 1.0, "latency_ms": {"1x16": {"p50": 2.0}}, "decode_tokens_per_s": 10.0,
                "peak_rss_mb": None, "energy_j_per_1k_tokens": joules, "co2e_g_per_1k_tokens": joules and joules / 10,
                "energy_source": "estimate", "ratios": {"prefill_speedup_1x16": 1.0,
                                                        **({"energy": ratio} if ratio else {})}}

    console = Console(width=200, record=True)
    console.print(_runtime_table([row("base", 12.5), row("int8", 5.0, 0.4)]))
    text = console.export_text()
    assert "energy J / 1k tokens (prefill)" in text and "12.5" in text and "(0.40×)" in text
    assert "CO2e g / 1k tokens" in text
    console = Console(width=200, record=True)
    console.print(_runtime_table([row("base", None), row("int8", None)]))  # not metered: no empty rows
    assert "energy" not in console.export_text()
