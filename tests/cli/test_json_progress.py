"""--json puts the JSON document on stdout; progress of long work still goes to stderr (it went silent for
training: distill and finetune showed nothing at all with --json)."""

import json

from slimlm.cli.main import main


def test_distill_json_keeps_progress_on_stderr(tmp_path, text_file, capsys):
    code = main(["distill", "tiny:llama?layers=1", "--teacher", "tiny:llama?layers=1", "--data", str(text_file),
                 "--steps", "3", "--batch-size", "2", "--seq-len", "16", "--eval-tokens", "32",
                 "--out", str(tmp_path / "d"), "--json"])
    cap = capsys.readouterr()
    assert code == 0 and json.loads(cap.out)["steps"] == 3
    assert "distill: step" in cap.err and "loss" in cap.err


def test_finetune_json_keeps_progress_on_stderr(tmp_path, finetune_args, capsys):
    code = main(finetune_args(tmp_path / "f"))  # with --json
    cap = capsys.readouterr()
    assert code == 0 and isinstance(json.loads(cap.out), dict)
    assert "finetune: step" in cap.err
