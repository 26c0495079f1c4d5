"""The GPU path, run where a CUDA GPU is present (skipped elsewhere): sampling in bfloat16, distillation,
and evaluation on the GPU agree with the CPU and hand the models back as they were.

On a machine with a GPU: ``.venv/bin/python -m pytest -q tests/gpu`` (the default ``make test`` includes them).
"""

import json

import pytest
import torch

from slimlm.cli.main import main
from slimlm.data import load_data
from slimlm.distill import DistillConfig, distill_run
from slimlm.distill.samples import make_config, sample_text
from slimlm.evaluate import evaluate
from slimlm.models import load

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TINY = "tiny:llama?layers=2&hidden=64&heads=4&kv_heads=2&ffn=128&seed=3"


def test_sampling_on_the_gpu_in_bfloat16_hands_the_model_back_unchanged(tmp_path):
    m = load(TINY)
    before = {k: v.clone() for k, v in m.hf.state_dict().items()}
    res = sample_text(m, tmp_path / "s", make_config(tokens=2048, length=32, batch_size=64), device="cuda")
    assert res["device"].startswith("cuda") and res["settings"]["dtype"] == "auto" and res["tokens"] >= 2048
    after = m.hf.state_dict()
    assert all(after[k].device.type == "cpu" and torch.equal(before[k], after[k]) for k in before)
    texts = load_data(str(tmp_path / "s")).texts("train")
    assert len(texts) > 40 and sum(map(len, texts)) > 1000


def test_distillation_on_the_gpu_lowers_the_loss(tmp_path, text_file):
    teacher, student = load(TINY), load(TINY.replace("seed=3", "seed=4"))
    teacher.hf.cuda()
    student.hf.cuda()
    corpus = load_data(str(text_file))
    res = distill_run(student, teacher, corpus, DistillConfig(steps=20, lr=3e-3, seq_len=32, batch_size=4))
    first, last = res.history[0]["loss"], sum(h["loss"] for h in res.history[-3:]) / 3
    assert last < first and all(torch.isfinite(p).all() for p in student.hf.parameters())


def test_gpu_evaluation_matches_the_cpu(capsys, text_file):
    m = load(TINY)
    corpus = load_data(str(text_file))
    cpu = evaluate(m, corpus, seq_len=64, max_tokens=512)["perplexity"]
    m.hf.cuda()
    gpu = evaluate(m, corpus, seq_len=64, max_tokens=512)["perplexity"]
    assert abs(gpu - cpu) / cpu < 1e-3, (cpu, gpu)
    assert main(["evaluate", TINY, "--data", str(text_file), "--max-tokens", "512", "--seq-len", "64",
                 "--device", "cuda:0", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["device"] == "cuda:0" and abs(res["perplexity"] - cpu) / cpu < 1e-3


def test_cli_distill_on_the_gpu_saves_a_cpu_loadable_student(tmp_path, capsys, text_file):
    assert main(["distill", TINY, "--teacher", TINY, "--data", str(text_file), "--steps", "3", "--seq-len", "16",
                 "--batch-size", "2", "--device", "cuda:0", "--out", str(tmp_path / "s"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finished"]
    assert load(str(tmp_path / "s")).hf.device.type == "cpu"
