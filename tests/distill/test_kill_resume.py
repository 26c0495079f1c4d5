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


def test_resume_after_a_kill_between_saving_the_student_and_exiting_reports_the_finished_run(tmp_path, capsys,
                                                                                             text_file):
    """A kill can land after the student is saved but before the process removed its checkpoint or exited;
    `--resume` then finds the finished student of the same run, removes the checkpoint left behind, and
    reports that run instead of refusing the --out it wrote itself."""
    import json

    from slimlm.cli.main import main

    out = tmp_path / "s"
    args = ["distill", STUDENT, "--teacher", TEACHER, "--data", str(text_file), "--steps", "4", "--seq-len", "16",
            "--batch-size", "2", "--checkpoint-every", "2", "--out", str(out), "--json"]
    capsys.readouterr()
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    saved = (out / "model.safetensors").read_bytes()
    leftover = tmp_path / "s.checkpoint"
    leftover.mkdir()  # as the killed run would have left it
    (leftover / "meta.json").write_text("{}")
    assert main([*args, "--resume"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["already_finished"] and again["finished"] and again["eval"] == first["eval"]
    assert again["steps"] == first["steps"] == 4
    assert not leftover.exists() and (out / "model.safetensors").read_bytes() == saved
    # another run's settings: that --out is not this run's, and is refused as before
    assert main([*args[:-1], "--lr", "1e-3", "--resume", "--json"]) == 2
    assert "holds an earlier slimlm variant" in capsys.readouterr().err


def test_finetune_resume_after_a_kill_between_saving_and_exiting_reports_the_finished_run(tmp_path, capsys,
                                                                                          finetune_args):
    import json

    from slimlm.cli.main import main

    out = tmp_path / "clf"
    capsys.readouterr()
    assert main(finetune_args(out)) == 0
    first = json.loads(capsys.readouterr().out)
    leftover = tmp_path / "clf.checkpoint"
    leftover.mkdir()
    (leftover / "meta.json").write_text("{}")
    assert main(finetune_args(out, "--resume")) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["already_finished"] and again["eval"] == first["eval"] and not leftover.exists()
    assert main(finetune_args(out, "--lr", "1e-3", "--resume")) == 2  # not this run's --out
    assert "holds an earlier slimlm variant" in capsys.readouterr().err
