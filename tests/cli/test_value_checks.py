"""Out-of-range option values are refused before any work: exit 2, one ``error:`` line naming the option, and
nothing written (no decision record, no output directory, no model loaded).

Each refusal has a companion that gives an accepted value on the same setup and sees it go through, so a
refusal cannot pass because the setup was broken.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cli_errors import error_line, snapshot

from slimlm.cli.main import main

TEXT = ("Shall I compare thee to a summer's day? Thou art more lovely and more temperate:\n"
        "Rough winds do shake the darling buds of May, and summer's lease hath all too short a date.\n") * 30




def _refused(capsys, argv: list[str], option: str) -> str:
    """Run the CLI; assert exit 2 and exactly one ``error:`` line naming ``option``; return that line."""
    code = main(argv)
    line = error_line(code, capsys.readouterr().err)
    assert option in line, line
    return line


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny run directory (int8-dynamic of tiny:llama, not profiled) holding decision 1."""
    base = tmp_path_factory.mktemp("value-checks")
    with pytest.MonkeyPatch.context() as mp:  # module scope: set up before conftest's per-test cache isolation
        mp.setenv("SLIMLM_CACHE", str(tmp_path_factory.getbasetemp() / "slimlm-cache"))
        text = base / "text.txt"
        text.write_text(TEXT)
        run = base / "run"
        assert main(["compress", "tiny:llama", "--recipe", "int8-only", "--no-profile", "--ood-data", "none",
                     "--data", str(text), "--eval-tokens", "256", "--seq-len", "32", "--out", str(run)]) == 0
        assert main(["decide", str(run), "--tier", "medium", "--note", "initial"]) == 0
    assert sorted(p.name for p in (run / "decisions").iterdir()) == ["0001.json"]
    return run


# -- decide: the numeric options are checked as `slimlm report` checks them


DECIDE_NUMBERS = ["--traffic", "--max-latency-ms", "--max-memory-mb", "--price-per-hour", "--grid-gco2-per-kwh"]


@pytest.mark.parametrize("option", DECIDE_NUMBERS)
def test_decide_refuses_negative_value_and_writes_no_record(run_dir, capsys, option):
    before = snapshot(run_dir)
    line = _refused(capsys, ["decide", str(run_dir), option, "-1"], option)
    assert "greater than or equal to 0" in line
    assert snapshot(run_dir) == before  # no decisions/000N.json, report.html or decision.md rewritten


@pytest.mark.parametrize("option", ["--traffic", "--price-per-hour"])
def test_report_and_decide_refuse_a_negative_value_with_the_same_message(run_dir, capsys, option):
    lines = [_refused(capsys, [cmd, str(run_dir), option, "-5"], option) for cmd in ("report", "decide")]
    assert lines[0].replace("slimlm report", "slimlm decide") == lines[1]


def test_decide_records_zero_values(run_dir, capsys):
    """0 is in range for every numeric option: the record is written, with the forecast inputs given."""
    old = {p.name for p in (run_dir / "decisions").iterdir()}
    argv = ["decide", str(run_dir), "--tier", "medium", "--json"]
    for option in DECIDE_NUMBERS:
        argv += [option, "0"]
    assert main(argv) == 0
    new = {p.name for p in (run_dir / "decisions").iterdir()} - old
    assert len(new) == 1
    rec = json.loads((run_dir / "decisions" / new.pop()).read_text())
    assert rec["max_latency_ms"] == 0 and rec["max_memory_mb"] == 0
    assert {k: rec["inputs"][k] for k in ("traffic_per_day", "price_per_hour", "grid_gco2_per_kwh")} == {
        "traffic_per_day": 0, "price_per_hour": 0, "grid_gco2_per_kwh": 0}
    out = json.loads(capsys.readouterr().out)
    assert out["number"] == rec["number"]


def test_decide_help_shows_the_ranges(capsys):
    assert main(["decide", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in DECIDE_NUMBERS:
        entry = text.split(f"{option} <float range>", 1)[1].split("]", 1)[0]
        assert "x>=0.0" in entry, (option, entry)


# -- export: a negative tolerance is refused before the variant is loaded


@pytest.fixture
def stub_export(monkeypatch):
    """Record the model loads and export calls instead of doing them."""
    calls: dict = {"load": [], "export": []}

    def load(spec, **kw):
        calls["load"].append(spec)
        return object()

    def export(model, fmt, out_dir, **kw):
        calls["export"].append(kw)
        return {"precision": "f16", "main_file": "x.gguf", "files": {}, "seconds": 0.0}

    monkeypatch.setattr("slimlm.models.load", load)
    monkeypatch.setattr("slimlm.export.export", export)
    return calls


def test_export_refuses_negative_tolerance_before_loading(tmp_path, capsys, stub_export):
    out = tmp_path / "gguf"
    _refused(capsys, ["export", "tiny:llama", "--format", "gguf", "--tolerance", "-1", "--out", str(out)],
             "--tolerance")
    assert stub_export == {"load": [], "export": []}
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_export_passes_a_zero_tolerance_on(tmp_path, capsys, stub_export):
    code = main(["export", "tiny:llama", "--format", "gguf", "--tolerance", "0", "--out", str(tmp_path / "gguf"),
                 "--json"])
    assert code == 0, capsys.readouterr().err
    assert stub_export["load"] == ["tiny:llama"] and stub_export["export"][0]["tolerance"] == 0.0


# -- quantize: --skip both, as the help offers, is lm_head and embed


def _quantized_layers(variant: Path) -> tuple[list[str], list[str]]:
    meta = json.loads((variant / "slimlm.json").read_text())
    return sorted(meta["quantization"]["layers"]), meta["stages"][-1]["config"]["skip"]


def test_quantize_skip_both_is_lm_head_and_embed(tmp_path, capsys):
    outs = {}
    for skip in ("both", "lm_head,embed", "none"):
        outs[skip] = tmp_path / skip.replace(",", "-")
        code = main(["quantize", "tiny:llama", "--scheme", "int8-dynamic", "--skip", skip, "--out",
                     str(outs[skip]), "--json"])
        assert code == 0, capsys.readouterr().err
    both, explicit, none = (_quantized_layers(outs[s]) for s in ("both", "lm_head,embed", "none"))
    assert both == explicit
    assert sorted(both[1]) == ["embed", "lm_head"]
    # the comparison can tell: quantizing everything adds the embeddings and lm_head
    assert set(none[0]) - set(both[0]) == {"lm_head", "model.embed_tokens"}


def test_quantize_skip_still_refuses_an_unknown_part(tmp_path, capsys):
    out = tmp_path / "q"
    _refused(capsys, ["quantize", "tiny:llama", "--scheme", "int8-dynamic", "--skip", "both,bogus", "--out",
                      str(out)], "bogus")
    assert not out.exists()


# -- prune: the unstructured-only options are refused with --structured, when given (even at their default)


@pytest.fixture
def stub_prune(monkeypatch):
    """Record the configs prune_job is called with instead of loading and pruning a model."""
    calls = []

    def prune_job(model, cfg, out_dir, **kw):
        calls.append(cfg)
        return {"out": out_dir}

    monkeypatch.setattr("slimlm.prune.job.prune_job", prune_job)
    return calls


@pytest.mark.parametrize(("extra", "named"), [
    (["--sparsity", "0.9"], "--sparsity"),
    (["--pattern", "2:4"], "--pattern"),
    (["--allocation", "owl"], "--allocation"),
    (["--allocation", "uniform"], "--allocation"),  # the default value, but given
    (["--include", "lm_head"], "--include"),
    (["--no-sequential"], "--no-sequential"),
    (["--blocksize", "64"], "--blocksize"),
    (["--damp", "0.1"], "--damp"),
    (["--sparsity", "0.5", "--pattern", "2:4"], "--sparsity, --pattern"),
])
def test_prune_structured_refuses_unstructured_options(tmp_path, capsys, stub_prune, extra, named):
    out = tmp_path / "pruned"
    line = _refused(capsys, ["prune", "tiny:llama", "--structured", "layers=1", *extra, "--out", str(out)], named)
    assert "--structured" in line
    assert stub_prune == []  # refused before the model is loaded
    assert not out.exists()


def test_prune_structured_alone_and_unstructured_options_alone_still_run(tmp_path, capsys, stub_prune):
    assert main(["prune", "tiny:llama", "--structured", "layers=1", "--layer-importance", "perplexity",
                 "--out", str(tmp_path / "s"), "--json"]) == 0, capsys.readouterr().err
    assert main(["prune", "tiny:llama", "--sparsity", "0.9", "--allocation", "owl", "--no-sequential",
                 "--out", str(tmp_path / "u"), "--json"]) == 0, capsys.readouterr().err
    structured, unstructured = stub_prune
    assert structured.method == "structured" and structured.layers == 1
    assert structured.layer_importance == "perplexity"
    assert unstructured.method == "wanda" and unstructured.sparsity == 0.9
    assert unstructured.allocation == "owl" and unstructured.sequential is False


# -- monitor rules: a negative cost margin is refused


def test_monitor_rules_refuses_negative_cost_margin(run_dir, tmp_path, capsys):
    before = snapshot(run_dir)
    _refused(capsys, ["monitor", "rules", str(run_dir), "--cost-margin", "-1"], "--cost-margin")
    rules = tmp_path / "rules.yml"
    _refused(capsys, ["monitor", "rules", str(run_dir), "--cost-margin", "-0.5", "--out", str(rules)],
             "--cost-margin")
    assert snapshot(run_dir) == before  # no RUN_DIR/monitor
    assert list(tmp_path.iterdir()) == []


def test_monitor_rules_accepts_zero_cost_margin(run_dir, tmp_path, capsys):
    rules = tmp_path / "rules.yml"
    code = main(["monitor", "rules", str(run_dir), "--cost-margin", "0", "--out", str(rules), "--json"])
    assert code == 0, capsys.readouterr().err
    assert rules.is_file() and (tmp_path / "rules-test.yml").is_file()
