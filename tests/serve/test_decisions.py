"""Versioned decisions: numbering, old records kept, pinned variants, decision.md, and the CLI."""

import json
import shutil

import pytest

from slimlm.cli.main import main
from slimlm.report.decisions import (
    DecisionError,
    current_decision,
    list_decisions,
    load_decision,
    record_decision,
)


@pytest.fixture
def run_copy(run, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(run["dir"], d)
    shutil.rmtree(d / "decisions")
    return {**run, "dir": d}


def test_decisions_are_numbered_and_old_ones_stay(run_copy):
    d = run_copy["dir"]
    implicit = current_decision(d)  # nothing recorded: run.json's rule, unsaved
    assert implicit["number"] == 0 and not (d / "decisions").exists()
    first = record_decision(d, tier="medium")
    text_before = (d / "decisions" / "0001.json").read_text()
    second = record_decision(d, tier="critical")
    assert (first["number"], second["number"]) == (1, 2)
    assert (d / "decisions" / "0001.json").read_text() == text_before  # never rewritten
    assert [r["number"] for r in list_decisions(d)] == [1, 2]
    assert load_decision(d)["number"] == 2 and current_decision(d, 1)["max_drop"] == 0.03
    assert second["max_drop"] == 0.005 and second["tier"] == "critical"
    assert "critical" in (d / "decision.md").read_text() or "0.5%" in (d / "decision.md").read_text()


def test_the_rule_picks_the_good_variant_and_records_what_a_server_needs(run_copy):
    rec = record_decision(run_copy["dir"], tier="medium")
    assert rec["selected"] == run_copy["good"] and rec["met"] and not rec["pinned"]
    v = rec["variant"]
    assert v["path"].endswith(run_copy["good"]) and v["recipe"] == "int8-dynamic"
    assert rec["baseline"]["path"] == "tiny:llama"
    assert run_copy["good"] in rec["frontier"] and "fastlossy" in rec["frontier"]
    fc = rec["forecast"]
    # 7 ms at 1x16 -> 128 prompt tokens take 56 ms, 64 tokens at 500 tok/s take 128 ms; USD 0.10 per hour
    assert fc["seconds_per_request"] == pytest.approx(0.056 + 0.128)
    assert fc["usd_per_1k_requests"] == pytest.approx(1000 * 0.184 / 3600 * 0.10)
    assert fc["g_co2e_per_request"] > 0


def test_a_pinned_variant_keeps_the_tier_bound_and_says_whether_it_meets_it(run_copy):
    d = run_copy["dir"]
    md = (d / "decision.md").read_text()
    rec = record_decision(d, variant="fastlossy", tier="medium")
    assert rec["pinned"] and rec["selected"] == "fastlossy" and not rec["met"] and rec["max_drop"] == 0.03
    assert (d / "decision.md").read_text() == md  # decision.md describes the rule's choice
    with pytest.raises(DecisionError, match="not in"):
        record_decision(d, variant="nope")
    with pytest.raises(DecisionError, match="decision 9 is not recorded"):
        load_decision(d, 9)
    (d / "decisions" / "0009.json").write_text(json.dumps({"variant": 7}))  # hand-edited: not a record
    with pytest.raises(DecisionError, match="0009.json is not a decision record"):
        load_decision(d, 9)


def test_decide_cli_records_and_lists(run_copy, capsys):
    d = str(run_copy["dir"])
    assert main(["decide", d, "--tier", "high", "--note", "tighter", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["number"] == 1 and out["tier"] == "high" and out["path"].endswith("0001.json")
    assert main(["decide", d, "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["number"] for r in listed] == [1] and listed[0]["note"] == "tighter"
    assert main(["decide", d, "--tier", "bogus"]) == 2
    assert "--tier 'bogus' is unknown" in capsys.readouterr().err


def test_serve_refuses_a_public_interface_without_allow_remote(run, capsys):
    assert main(["serve", str(run["dir"]), "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_a_moved_run_directory_still_serves_its_decisions(run_copy, tmp_path):
    from slimlm.serve.target import resolve

    record_decision(run_copy["dir"], tier="medium")
    moved = tmp_path / "elsewhere"
    run_copy["dir"].rename(moved)
    target = resolve(moved)
    assert target.model_path == str(moved / "cache" / run_copy["good"]) and target.number == 1
    assert target.teacher == "tiny:llama" and {v["id"] for v in target.variants} >= {run_copy["good"], "badbuild"}
