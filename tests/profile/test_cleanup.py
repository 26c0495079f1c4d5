"""Clean-up: the memory probe dies with its parent; profile temp saves live in the cache and are swept."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from slimlm._io import cache_dir, temp_path
from slimlm.models import load
from slimlm.profile.core import disk_mb


def _dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state  # a zombie waiting for a reaper is dead too


def test_memory_probe_child_dies_when_its_parent_is_killed(tmp_path):
    ready = tmp_path / "ready"
    child_code = ("from slimlm.profile.memprobe import die_with_parent; die_with_parent(); import time; "
                  f"open({str(ready)!r}, 'w').close(); time.sleep(120)")
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {child_code!r}], "
        "env={**os.environ, 'SLIMLM_PARENT_PID': str(os.getpid())})\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    for _ in range(600):  # until the child has asked for its death signal (slow imports under load)
        if ready.exists():
            break
        time.sleep(0.1)
    assert ready.exists() and not _dead(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(50):
        if _dead(child):
            break
        time.sleep(0.1)
    assert _dead(child)


def test_profile_temp_save_lives_in_the_cache_and_stale_ones_are_swept(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a /tmp save would have gone
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    root = cache_dir("tmp")
    stale = Path(str(temp_path(root / "profile")).replace(f"-{os.getpid()}-", f"-{dead}-"))
    (stale / "model").mkdir(parents=True)
    (stale / "model" / "model.safetensors").write_bytes(b"0" * 1000)
    assert disk_mb(load("tiny:llama?layers=2")) > 0  # a model without a directory is saved to measure it
    assert not stale.exists()
    assert list(root.iterdir()) == []  # its own temp save is gone too
    assert not list(tmp_path.glob("slimlm*"))
