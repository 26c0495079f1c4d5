"""`slimlm compress` and `slimlm recipes` end to end on a tiny model, in-process."""

import json

from slimlm.cli.main import main

RECIPE = """name: tiny
stages:
  - prune: {method: structured, layers: 1}
    calibration: {samples: 4, seq_len: 32}
  - quantize: {scheme: int8-weight}
"""


def test_compress_json_writes_run_dir_report_and_decision(capsys, tmp_path, text_file):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "run"
    code = main(["compress", "tiny:llama", "--recipe", str(recipe), "--data", str(text_file), "--ood-data", "none",
                 "--out", str(out), "--eval-tokens", "128", "--seq-len", "32", "--no-profile", "--max-drop", "50%",
                 "--max-ood-drop", "5%", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {"out", "variants", "frontier", "selected", "met", "report", "decision"} <= data.keys()
    assert len(data["variants"]) == 3 and data["variants"][0]["is_baseline"]
    html = (out / "report.html").read_text()
    assert "plotly" in html.lower() and "<table" in html
    assert "decision" in (out / "decision.md").read_text().lower()
    run = json.loads((out / "run.json").read_text())
    assert run["selection"]["max_drop"] == 0.5 and run["selection"]["max_ood_drop"] == 0.05
    assert "not applied" in data["guard"]  # --ood-data none: nothing to guard


def test_bad_recipe_fails_before_any_work(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages:\n  - quantize: {scheme: int4-weight, group_size: 33}\n")
    code = main(["compress", "./no-such-model", "--recipe", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "stages[0].quantize" in err and "group_size" in err
    assert not (tmp_path / "o").exists()


def test_recipes_list_and_validate_json(capsys):
    assert main(["recipes", "list", "--json"]) == 0
    names = {r["name"] for r in json.loads(capsys.readouterr().out)}
    assert {"quick", "balanced", "aggressive", "int8-only", "sparse-50"} <= names
    assert main(["recipes", "validate", "quick", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True


def test_max_ood_drop_help_states_the_librarys_default():
    from slimlm.cli._options import MAX_OOD_DROP
    from slimlm.search import DEFAULT_MAX_OOD_DROP

    assert f"default {DEFAULT_MAX_OOD_DROP:.0%}" in MAX_OOD_DROP.help


def test_search_without_profiling_defaults_to_the_size_objective(capsys, tmp_path, text_file):
    # --no-profile measures quality and disk size only: the default objective follows (latency would leave
    # every trial without a cost, and the search used to fail after its trials)
    space = tmp_path / "space.yaml"
    space.write_text("name: t\nchoices:\n  quantize: [none, int8-weight]\n")
    code = main(["search", "tiny:llama", "--space", str(space), "--trials", "2", "--data", str(text_file),
                 "--ood-data", "none", "--eval-tokens", "128", "--no-profile",
                 "--max-drop", "50%", "--out", str(tmp_path / "run"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["study"]["completed"] == 2
    assert all(len(t["values"]) == 2 and None not in t["values"] for t in data["study"]["trials"])  # drop, size
    assert json.loads((tmp_path / "run" / "run.json").read_text())["objectives"] == ["quality_drop", "disk_mb"]


def test_recipes_show_json_round_trips_the_recipe(capsys):
    from slimlm.recipes import load_recipe

    assert main(["recipes", "show", "quick", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    want = load_recipe("quick")
    assert data["name"] == "quick" and data["stages"] == [s.to_dict() for s in want.stages]
    assert data["yaml"] == want.to_yaml()
