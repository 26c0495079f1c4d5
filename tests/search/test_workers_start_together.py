"""Workers that start at the same moment on a new database all open the study (the schema-creation race)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from slimlm.testing.postgres import postgres_server, server_bin

N = 6
SCRIPT = """\
import importlib.util, sys, time
# load slimlm.search.workers without the package's __init__ (which imports torch): six cold torch imports
# on a busy 2-core machine would dominate the test
spec = importlib.util.spec_from_file_location("workers", sys.argv[3])
workers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(workers)
url, go = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, go - time.time()))  # every process starts opening at the same instant
store = workers.open_storage(url, heartbeat_s=5)
study = workers.open_study(store, "together", ["minimize"], None)
print(study._study_id)
"""


def _start_together(tmp_path, url: str) -> list[str]:
    import time

    (tmp_path / "w.py").write_text(SCRIPT)
    from slimlm.search import workers

    go = time.time() + 5  # imports finish before this, even under load
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "w.py"), url, str(go), workers.__file__], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(N)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-1500:] for _, e in outs]
    return [o.strip() for o, _ in outs]


def test_sqlite_workers_starting_together_share_one_study(tmp_path):
    ids = _start_together(tmp_path, f"sqlite:///{tmp_path / 'study.db'}")
    assert len(set(ids)) == 1


@pytest.mark.skipif(server_bin() is None, reason="PostgreSQL server binaries not installed")
def test_postgres_workers_starting_together_share_one_study(tmp_path):
    pytest.importorskip("psycopg2")
    with postgres_server("together") as url:
        ids = _start_together(tmp_path, url)
    assert len(set(ids)) == 1
