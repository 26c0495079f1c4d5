import json

import pytest

from slimlm.cli.main import main
from slimlm.errors import ConfigError
from slimlm.prune import ScheduleConfig, WandaConfig, make_config, run_schedule
from slimlm.prune.schedule import cubic_ramp
from slimlm.prune.sensitivity import sensitivity


def test_cubic_ramp_front_loads_and_ends_at_the_target():
    ramp = cubic_ramp(0.5, 4)
    assert ramp[-1] == pytest.approx(0.5)
    steps = [b - a for a, b in zip([0.0] + ramp, ramp, strict=False)]
    assert all(x > y for x, y in zip(steps, steps[1:], strict=False))  # each step prunes less than the one before


def test_iterative_schedule_records_each_step(trained, calib, eval_windows, lm_loss):
    seen = []
    records = run_schedule(trained, WandaConfig(sparsity=0.6), calib, ScheduleConfig(kind="iterative", steps=3),
                           evaluate=lambda m: {"loss": lm_loss(m, eval_windows)},
                           between=lambda step, m: seen.append(step))
    assert seen == [1, 2, 3]
    assert [r["sparsity"] for r in records] == pytest.approx(cubic_ramp(0.6, 3), abs=1e-3)
    losses = [r["metrics"]["loss"] for r in records]
    assert losses[0] < losses[-1]  # more sparsity, more loss
    assert all((lin.weight == 0).float().mean() == pytest.approx(0.6, abs=1e-3)
               for lin in trained.adapter.block_linears().values())


def test_iterative_schedule_refuses_patterns(trained, calib):
    with pytest.raises(ConfigError, match="oneshot"):
        run_schedule(trained, make_config("wanda", pattern="2:4"), calib, ScheduleConfig(kind="iterative", steps=2))


@pytest.mark.parametrize("kind", ["layers", "ffn", "heads", "unstructured"])
def test_sensitivity_prunes_each_block_alone_and_restores_the_model(kind, trained, calib, eval_windows):
    h = trained.rehash()
    res = sensitivity(trained, calib, eval_windows[:4], kind=kind, ratios=(0.25, 0.9))
    n_ratios = 1 if kind == "layers" else 2
    assert len(res["rows"]) == 3 * n_ratios
    assert all(r["value"] > res["baseline"] * 0.99 for r in res["rows"])
    if kind != "layers":  # pruning more of a block hurts more
        by = {(r["layer"], r["ratio"]): r["value"] for r in res["rows"]}
        assert sum(by[(i, 0.9)] for i in range(3)) > sum(by[(i, 0.25)] for i in range(3))
    assert trained.rehash() == h


@pytest.fixture
def corpus_file(tmp_path, data):
    p = tmp_path / "docs.txt"
    p.write_text("\n\n".join(data[0][:10]))
    return p


def test_cli_prune_saves_a_variant_recording_config_and_sparsity(corpus_file, tmp_path, capsys):
    out = tmp_path / "v"
    code = main(["prune", "tiny:llama", "--out", str(out), "--data", str(corpus_file), "--method", "sparsegpt",
                 "--pattern", "2:4", "--calib-samples", "4", "--calib-seq-len", "32", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert {"out", "params_before", "params_after", "seconds", "sparsity", "layers"} <= set(res)
    assert res["sparsity"] == 0.5
    meta = json.loads((out / "slimlm.json").read_text())
    assert meta["stages"][-1]["config"]["method"] == "sparsegpt"
    assert meta["stages"][-1]["config"]["pattern"] == "2:4"
    assert meta["metrics"]["sparsity"] == 0.5
    assert len(meta["metrics"]["sparsity_per_layer"]) == 4


def test_cli_structured_and_iterative(corpus_file, tmp_path, capsys):
    code = main(["prune", "tiny:llama", "--out", str(tmp_path / "s"), "--data", str(corpus_file),
                 "--structured", "layers=1,ffn=0.25", "--calib-samples", "4", "--calib-seq-len", "32", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["params_after"] < res["params_before"]
    assert res["shape_after"]["layers"] == 3
    code = main(["prune", "tiny:llama", "--out", str(tmp_path / "i"), "--data", str(corpus_file), "--method",
                 "magnitude", "--schedule", "iterative", "--steps", "2", "--eval-tokens", "256", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert [s["step"] for s in res["steps"]] == [1, 2] and res["perplexity"] > 1


def test_cli_invalid_ratio_is_one_clear_line(corpus_file, tmp_path, capsys):
    code = main(["prune", "tiny:llama", "--out", str(tmp_path / "x"), "--data", str(corpus_file),
                 "--structured", "heads=0.25"])
    assert code == 2
    err = capsys.readouterr().err
    assert "valid ratios" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_cli_sensitivity_json(corpus_file, tmp_path, capsys):
    code = main(["sensitivity", "tiny:llama", "--data", str(corpus_file), "--kind", "ffn", "--ratios", "0.5",
                 "--calib-samples", "2", "--calib-seq-len", "32", "--eval-samples", "2", "--eval-seq-len", "32",
                 "--out", str(tmp_path / "s.json"), "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["kind"] == "ffn" and len(res["rows"]) == 4
    assert json.loads((tmp_path / "s.json").read_text())["rows"] == res["rows"]


def test_cli_prune_eval_tokens_measures_a_classifier_by_accuracy(tmp_path, capsys, labelled_file):
    """--eval-tokens on a classifier reported "perplexity": null and nothing else."""
    assert main(["prune", "tiny:bert?labels=2", "--data", str(labelled_file), "--structured", "ffn=0.25",
                 "--calib-samples", "2", "--calib-seq-len", "16", "--eval-tokens", "64", "--out",
                 str(tmp_path / "p"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 0.0 <= res["accuracy"] <= 1.0 and 0.0 <= res["f1"] <= 1.0 and res.get("perplexity") is None
