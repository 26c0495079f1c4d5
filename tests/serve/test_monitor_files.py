"""`slimlm monitor rules|dashboard RUN_DIR` rewrites its own files under RUN_DIR/monitor, never a user's edit."""

import json
import shutil

from slimlm.cli.main import main


def _copy(run, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(run["dir"], d, ignore=shutil.ignore_patterns("cache", "exports", "monitor"))
    return d


def test_monitor_files_are_rewritten_but_an_edit_is_kept_unless_forced(run, tmp_path, capsys):
    d = _copy(run, tmp_path)
    rules, tests, dash = (d / "monitor" / n for n in ("slimlm-rules.yml", "slimlm-rules-test.yml",
                                                        "grafana-dashboard.json"))
    assert main(["monitor", "rules", str(d), "--json"]) == 0
    assert main(["monitor", "dashboard", str(d), "--json"]) == 0
    capsys.readouterr()
    assert rules.is_file() and tests.is_file() and dash.is_file()
    # slimlm's own files, unchanged since: a re-run (e.g. after a new decision) replaces them
    assert main(["monitor", "rules", str(d), "--quality-for", "2m"]) == 0
    assert "for: 2m" in rules.read_text()
    # a user's edit is kept, with a one-line error naming --force and --out
    rules.write_text(rules.read_text() + "# my own alert\n")
    assert main(["monitor", "rules", str(d)]) == 2
    err = capsys.readouterr().err
    assert "slimlm-rules.yml was changed since slimlm wrote it" in err and "--force" in err and "--out" in err
    assert rules.read_text().endswith("# my own alert\n")
    # the dashboard is recorded separately: still slimlm's, still rewritten
    assert main(["monitor", "dashboard", str(d)]) == 0
    # --force replaces the edit; --out writes elsewhere and leaves it alone
    assert main(["monitor", "rules", str(d), "--out", str(tmp_path / "elsewhere.yml")]) == 0
    assert rules.read_text().endswith("# my own alert\n")
    assert main(["monitor", "rules", str(d), "--force"]) == 0
    assert "# my own alert" not in rules.read_text()
    assert main(["monitor", "rules", str(d)]) == 0  # recorded again after the forced write


def test_a_monitor_file_slimlm_has_no_record_of_is_not_replaced(run, tmp_path, capsys):
    d = _copy(run, tmp_path)
    (d / "monitor").mkdir()
    mine = d / "monitor" / "grafana-dashboard.json"
    mine.write_text(json.dumps({"title": "hand-made"}))
    assert main(["monitor", "dashboard", str(d)]) == 2
    assert "no record of writing it" in capsys.readouterr().err
    assert json.loads(mine.read_text()) == {"title": "hand-made"}
