"""Commands that replace earlier outputs keep what the user added or edited there (found by an audit:
`export` into an earlier export folder deleted a note beside it; `report` overwrote a signed-off decision.md)."""

import json

from slimlm.cli.main import main

RUN = ["--eval-tokens", "64", "--seq-len", "32", "--no-profile", "--ood-data", "none"]


def test_export_into_an_earlier_export_keeps_a_users_note(tmp_path, capsys):
    out = tmp_path / "deploy"
    assert main(["export", "tiny:llama?layers=1", "--format", "gguf", "--type", "f32", "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    (out / "NOTES.md").write_text("mine")
    assert main(["export", "tiny:llama?layers=1", "--format", "gguf", "--type", "f16", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "NOTES.md, which slimlm did not write" in err and err.startswith("error:") and err.count("\n") == 1
    assert (out / "NOTES.md").read_text() == "mine" and (out / "model-f32.gguf").is_file()
    (out / "NOTES.md").unlink()
    assert main(["export", "tiny:llama?layers=1", "--format", "gguf", "--type", "f16", "--out", str(out)]) == 0
    assert (out / "model-f16.gguf").is_file() and not (out / "model-f32.gguf").exists()


def test_prune_force_keeps_a_users_note(tmp_path, capsys):
    out = tmp_path / "v"
    args = ["prune", "tiny:llama?layers=2", "--method", "magnitude", "--sparsity", "0.5", "--out", str(out)]
    assert main(args) == 0
    (out / "NOTES.md").write_text("mine")
    assert main([*args, "--force"]) == 2
    assert "NOTES.md" in capsys.readouterr().err and (out / "NOTES.md").read_text() == "mine"


def test_compress_and_report_keep_an_edited_decision_record(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    base = ["compress", "tiny:llama?layers=1", "--recipe", "int8-only", "--data", str(text_file), *RUN, "--out", str(out)]
    assert main([*base, "--json"]) == 0
    capsys.readouterr()
    decision = out / "decision.md"
    signed = decision.read_text() + "\nSIGNED OFF BY ALICE\n"
    decision.write_text(signed)
    assert main(["report", str(out), "--tier", "high"]) == 2
    err = capsys.readouterr().err
    assert "decision.md was changed since slimlm wrote it" in err and "--force" in err
    assert decision.read_text() == signed
    assert main(base) == 2  # a resumed compress says so before its work, not after
    assert decision.read_text() == signed
    records = sorted(p.name for p in (out / "decisions").glob("*")) if (out / "decisions").exists() else []
    assert main(["decide", str(out), "--tier", "high"]) == 2  # decide rewrites them too: refused, nothing recorded
    assert "decision.md was changed" in capsys.readouterr().err and decision.read_text() == signed
    assert (sorted(p.name for p in (out / "decisions").glob("*")) if (out / "decisions").exists() else []) == records
    assert main(["report", str(out), "--tier", "high", "--force", "--json"]) == 0
    assert "ALICE" not in decision.read_text() and json.loads(capsys.readouterr().out)["decision"] == str(decision)
    assert main(["report", str(out)]) == 0  # slimlm's own again: rewritten freely


def test_an_unknown_objective_fails_before_any_work(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert main(["compress", "tiny:llama?layers=1", "--recipe", "int8-only", "--data", str(text_file), *RUN,
                 "--objective", "speed", "--out", str(out)]) == 2
    assert "--objective 'speed' is unknown" in capsys.readouterr().err and not out.exists()
    assert main(["search", "tiny:llama?layers=1", "--trials", "1", "--data", str(text_file), "--eval-tokens", "64",
                 "--no-profile", "--ood-data", "none", "--objective", "speed", "--out", str(out)]) == 2
    assert "'speed'" in capsys.readouterr().err and not out.exists()


def test_compress_without_profiling_chooses_by_size_and_says_so(tmp_path, text_file, capsys):
    """--no-profile measures quality and disk size: the rule is by size, and no latency line is printed."""
    out = tmp_path / "run"
    args = ["compress", "tiny:llama?layers=1", "--recipe", "int8-only", "--data", str(text_file), *RUN]
    assert main([*args, "--objective", "latency", "--out", str(out)]) == 2
    assert "--objective latency needs profiling" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--max-latency-ms", "50", "--out", str(out)]) == 2
    assert "--max-latency-ms needs profiling" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "smallest" in text and "fastest" not in text and "latency measured on" not in text
    assert json.loads((out / "run.json").read_text())["selection"]["objective"] == "size"


def _tilde_commands(text_file):
    tiny = "tiny:llama?layers=1"
    return {
        "prune": ["prune", tiny, "--method", "magnitude", "--sparsity", "0.5"],
        "quantize": ["quantize", tiny, "--scheme", "int8-dynamic"],
        "export": ["export", tiny, "--format", "gguf", "--type", "f32"],
        "generate": ["generate", tiny, "--tokens", "16", "--length", "8"],
        "compress": ["compress", tiny, "--recipe", "int8-only", "--data", str(text_file), *RUN],
        "sensitivity": ["sensitivity", tiny, "--data", str(text_file), "--ratios", "0.5", "--eval-samples", "1",
                        "--eval-seq-len", "16", "--calib-samples", "1", "--calib-seq-len", "16"],
    }


def test_an_out_given_with_a_literal_tilde_is_written_where_it_was_checked(tmp_path, text_file, capsys, monkeypatch):
    """`--out '~/x'` (quoted, so no shell expanded it) is checked as the home folder's x: it must be written
    there too, not to a folder named '~' in the working directory that no check looked at."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    for name, argv in _tilde_commands(text_file).items():
        target = "~/sens.json" if name == "sensitivity" else f"~/{name}"
        assert main([*argv, "--out", target, "--json"]) == 0, capsys.readouterr().err
        capsys.readouterr()
        assert (home / target[2:]).exists(), name
        assert not (work / "~").exists(), name


def test_force_keeps_a_variant_file_the_user_edited(tmp_path, capsys):
    """`--force` replaces slimlm's variant, not a user's edit of one of its files (a config.json tuned by hand)."""
    out = tmp_path / "v"
    args = ["prune", "tiny:llama?layers=2", "--method", "magnitude", "--sparsity", "0.5", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    config = out / "config.json"
    edited = config.read_text().replace("{", '{\n  "my_note": "tuned by hand",', 1)
    config.write_text(edited)
    assert main([*args, "--force"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "config.json was changed since slimlm wrote it" in err
    assert config.read_text() == edited
    (tmp_path / "kept-config.json").write_text(config.read_text())
    config.unlink()  # moved out: the rest is slimlm's to replace
    assert main([*args, "--force"]) == 0
    assert "my_note" not in config.read_text()
    assert main([*args, "--force"]) == 0  # untouched since: replaced freely


def test_sensitivity_force_never_writes_its_result_over_its_own_data(tmp_path, capsys):
    data = tmp_path / "plain.txt"
    data.write_text("To be, or not to be, that is the question. " * 40)
    argv = ["sensitivity", "tiny:llama?layers=2", "--data", str(data), "--calib-samples", "1", "--calib-seq-len",
            "16", "--eval-samples", "1", "--eval-seq-len", "16", "--out", str(data), "--force"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and "--data file" in err
    assert data.read_text().startswith("To be")


def test_finetune_on_data_without_splits_says_its_accuracy_is_not_held_out(tmp_path, capsys, finetune_args):
    import json as _json

    assert main(finetune_args(tmp_path / "ft")) == 0
    res = _json.loads(capsys.readouterr().out)
    assert len(res["notes"]) == 1 and "not held out" in res["notes"][0]
    args = [a for a in finetune_args(tmp_path / "ft2") if a != "--json"]
    assert main(args) == 0
    assert "note:" in capsys.readouterr().out
