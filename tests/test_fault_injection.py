"""Fault injection: SIGKILL `slimlm compress` and `slimlm distill` at seeded-random moments, resume, compare.

Each command first runs once uninterrupted (the reference). Then the same command runs in a fresh directory
and is killed at a moment drawn from a seeded RNG, several times, each time resumed by running it again,
until one run completes. The resumed result must equal the reference: the same variants, bit-identical
weights, equal metrics; and no slimlm temp file (nor a distillation checkpoint) may survive it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from slimlm._io import TEMP_TAG

KILLS = 3
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "200"}
RECIPE = """\
name: faulty
stages:
  - prune: {method: structured, layers: 1, ffn: 0.25}
    calibration: {samples: 4, seq_len: 32}
  - distill: {loss: kl, steps: 12, lr: 3.0e-3, batch_size: 2, seq_len: 32, warmup_steps: 2, checkpoint_every: 2}
  - quantize: {scheme: int8-dynamic}
"""
TEACHER = "tiny:llama?layers=2&hidden=32&heads=2&kv_heads=1&ffn=64&seed=3"
STUDENT = "tiny:llama?layers=1&hidden=32&heads=2&kv_heads=1&ffn=64&seed=4"


def _run(cmd: list[str]) -> float:
    start = time.monotonic()
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return time.monotonic() - start


def _kill_and_resume(cmd: list[str], resume_cmd: list[str], reference_s: float, seed: int) -> list[float]:
    """Run, SIGKILL at a seeded-random moment, repeat (resuming) up to KILLS times, then finish."""
    rng = random.Random(seed)
    killed_at = []
    for attempt in range(KILLS):
        at = rng.uniform(0.2, 1.0) * reference_s  # seconds after start, somewhere in a whole run
        proc = subprocess.Popen(cmd if attempt == 0 else resume_cmd, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=at)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at.append(round(at, 1))
            continue
        assert proc.returncode == 0
        return killed_at  # it finished before the kill: nothing left to resume
    _run(resume_cmd)
    return killed_at


def _no_leftovers(root: Path) -> None:
    left = [p for p in root.parent.rglob("*") if TEMP_TAG in p.name or p.name.endswith((".tmp", ".ckpt", ".checkpoint"))]
    assert not left, left


def _weights(d: Path) -> dict:
    return {k: v for f in sorted(d.glob("*.safetensors")) for k, v in load_file(f).items()}


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert wa[k].dtype == wb[k].dtype and wa[k].shape == wb[k].shape and bool((wa[k] == wb[k]).all()), k


@pytest.fixture
def text(tmp_path):
    from slimlm.testing.students import small_corpus

    p = tmp_path / "text.txt"
    p.write_text(small_corpus(chars=6000, plays=1).splits["train"][0].text)
    return p


def test_compress_killed_at_random_resumes_to_the_same_variants(tmp_path, text):
    (tmp_path / "r.yaml").write_text(RECIPE)

    def cmd(out):
        return [sys.executable, "-m", "slimlm.cli.main", "compress", "tiny:llama?layers=2", "--recipe",
                str(tmp_path / "r.yaml"), "--data", str(text), "--ood-data", "none", "--eval-tokens", "64",
                "--seq-len", "32", "--no-profile", "--out", str(out), "--json"]

    # same-length paths: slimlm.json records the path, and disk_mb counts it
    ref, run = tmp_path / "ref" / "run", tmp_path / "kil" / "run"
    seconds = _run(cmd(ref))
    killed = _kill_and_resume(cmd(run), cmd(run), seconds, seed=11)
    assert killed, "no kill landed inside a run"

    def rows(d):
        return {r["id"]: r for r in map(json.loads, (d / "variants.jsonl").read_text().splitlines())}

    a, b = rows(ref), rows(run)
    assert a.keys() == b.keys() and len(a) == 4  # the baseline and the three stage outputs
    for vid, r in a.items():
        for key in ("perplexity", "ece", "quality_drop", "params", "teacher_top1", "teacher_kl"):
            assert r["metrics"].get(key) == b[vid]["metrics"].get(key), (vid, key)
        # disk_mb counts slimlm.json too, whose timings and timestamps differ by a few bytes
        assert r["metrics"]["disk_mb"] == pytest.approx(b[vid]["metrics"]["disk_mb"], abs=1e-3)
        if not r.get("is_baseline"):
            _same_weights(ref / r["path"], run / b[vid]["path"])
    _no_leftovers(run)


@pytest.mark.slow  # ~1 min; the default run keeps tests/distill/test_kill_resume.py (one kill after a checkpoint)
def test_distill_killed_at_random_resumes_bit_identically(tmp_path, text):
    def cmd(out, *extra):
        return [sys.executable, "-m", "slimlm.cli.main", "distill", STUDENT, "--teacher", TEACHER, "--data",
                str(text), "--out", str(out), "--steps", "24", "--seq-len", "32", "--batch-size", "2", "--lr",
                "3e-3", "--warmup", "3", "--checkpoint-every", "2", "--eval-tokens", "64", "--json", *extra]

    ref, out = tmp_path / "ref" / "s", tmp_path / "kil" / "s"
    seconds = _run(cmd(ref))
    killed = _kill_and_resume(cmd(out), cmd(out, "--resume"), seconds, seed=7)
    assert killed, "no kill landed inside a run"
    _same_weights(ref, out)
    ma = json.loads((ref / "slimlm.json").read_text())["metrics"]
    mb = json.loads((out / "slimlm.json").read_text())["metrics"]
    assert ma == mb
    _no_leftovers(out)
