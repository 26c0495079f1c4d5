"""A real crash: SIGKILL a `slimlm distill` process after its first checkpoint, resume it, compare weights."""

import os
import signal
import subprocess
import sys
import time

import torch

from slimlm.distill import DistillConfig, distill_run
from slimlm.models import load
from slimlm.testing.students import small_corpus

TEACHER = "tiny:llama?layers=2&hidden=32&heads=2&kv_heads=1&ffn=64&seed=3"
STUDENT = "tiny:llama?layers=1&hidden=32&heads=2&kv_heads=1&ffn=64&seed=4"
STEPS, EVERY = 30, 2


def _cmd(data, out, *extra):
    return [sys.executable, "-m", "slimlm.cli.main", "distill", STUDENT, "--teacher", TEACHER, "--data", str(data),
            "--out", str(out), "--steps", str(STEPS), "--seq-len", "32", "--batch-size", "2", "--lr", "3e-3",
            "--warmup", "3", "--checkpoint-every", str(EVERY), "--eval-tokens", "64", "--json", *extra]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    data = tmp_path / "train.txt"
    data.write_text(small_corpus(chars=6000, plays=1).splits["train"][0].text)
    out = tmp_path / "s"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(_cmd(data, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = out.with_name("s.checkpoint") / "meta.json"
    deadline = time.time() + 240
    while not meta.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert meta.exists() and not out.exists(), "the run must be killed mid-way, after a checkpoint"
    done = subprocess.run(_cmd(data, out, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"resumed_from": ' in done.stdout and '"resumed_from": null' not in done.stdout

    torch.set_num_threads(1)
    from slimlm.data import load_data

    ref = load(STUDENT)
    cfg = DistillConfig(steps=STEPS, seq_len=32, batch_size=2, lr=3e-3, warmup_steps=3)
    distill_run(ref, load(TEACHER), load_data(str(data)), cfg)
    resumed = load(out)
    for k, v in ref.hf.state_dict().items():
        assert torch.allclose(resumed.hf.state_dict()[k], v, atol=1e-6), k
