"""Three `slimlm search` workers on one study in a real PostgreSQL server; one is SIGKILLed mid-trial.

The survivors must fail the dead worker's trial (its heartbeat stopped) and run it again, once; the study
ends with exactly the budget of complete trials, none running, no parameter set run twice except that
retry, a shared pruning stage computed by one worker and reused by the others, and a report whose frontier
is the one recomputed from the rows of ``variants.jsonl``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slimlm.testing.postgres import postgres_server, server_bin

psycopg2 = pytest.importorskip("psycopg2", reason="the search extra's PostgreSQL driver (psycopg2-binary)")
pytestmark = pytest.mark.skipif(server_bin() is None, reason="PostgreSQL server binaries not installed")

TRIALS = 4
SPACE = """\
name: workers
choices:
  layers: [1]
  distill_steps: [0, 4]
  quantize: [none, int8-dynamic, int8-weight]
fixed:
  calibration: {samples: 4, seq_len: 32}
  distill: {batch_size: 2, seq_len: 32}
"""


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield url


def _logs(paths: list[Path]) -> list[str]:
    return [p.read_text(errors="replace") if p.exists() else "" for p in paths]


def test_three_workers_survive_a_killed_one(tmp_path, pg_url, text_file, capsys):
    import optuna
    from optuna.trial import TrialState

    (tmp_path / "space.yaml").write_text(SPACE)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "slimlm.cli.main", "search", "tiny:llama", "--out", str(run),
           "--storage", pg_url, "--study", "shared", "--space", str(tmp_path / "space.yaml"),
           "--trials", str(TRIALS), "--data", str(text_file), "--ood-data", "none", "--eval-tokens", "64",
           "--shapes", "1x8", "--repeats", "1", "--decode-tokens", "0", "--no-profile", "--objectives", "size",
           "--expand", "none", "--heartbeat", "1"]
    env = {**os.environ, "COLUMNS": "200", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    procs = [subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env) for log in logs]
    try:
        victim, deadline = None, time.monotonic() + 300
        while victim is None and time.monotonic() < deadline:  # kill the first worker that starts a trial
            for i, text in enumerate(_logs(logs)):
                if re.search(r"^trial \d+: ", text, re.M):
                    victim = i
                    break
            else:
                if any(p.poll() is not None for p in procs):
                    break  # a worker ended before any trial started: something is wrong, show its log
                time.sleep(0.1)
        assert victim is not None, _logs(logs)
        procs[victim].send_signal(signal.SIGKILL)
        codes = {i: p.wait(timeout=600) for i, p in enumerate(procs)}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    texts = _logs(logs)
    assert codes[victim] == -signal.SIGKILL
    assert all(c == 0 for i, c in codes.items() if i != victim), texts

    from slimlm.search.workers import driver_url

    study = optuna.load_study(study_name="shared", storage=driver_url(pg_url))
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == TRIALS  # the budget, exactly
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len(failed) == 1  # the killed worker's trial, failed by a survivor ...
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].params == failed[0].params  # ... and run again, once
    picks = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(picks)) == len(picks)  # no parameter set twice (the retry replaces the failed run)

    # the pruning stage every trial shares was computed by one worker and reused by the others
    assert sum(len(re.findall(r"stage 1 done in", t)) for t in texts) == 1
    assert sum(len(re.findall(r"stage 1/\d prune layers=1: cached", t)) for t in texts) >= TRIALS - 1

    from slimlm.cli.main import main
    from slimlm.search import pareto_front

    rows = [json.loads(x) for x in (run / "variants.jsonl").read_text().splitlines() if x.strip()]
    assert {t.user_attrs["variant"] for t in complete} <= {r["id"] for r in rows}
    objectives = json.loads((run / "run.json").read_text())["objectives"]
    expected = {rows[i]["id"] for i in pareto_front(rows, objectives)}
    capsys.readouterr()
    assert main(["report", str(run), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["frontier"]) == expected
