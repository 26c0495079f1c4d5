"""bench/encoder.py end to end on a tiny BERT and a small labelled CSV (no download, seconds)."""

import importlib.util
import json
import random
from pathlib import Path

import pytest
import torch

from slimlm.data import load_data
from slimlm.evaluate import evaluate
from slimlm.models import load

BENCH = Path(__file__).resolve().parents[2] / "bench" / "encoder.py"


@pytest.fixture(scope="module")
def encoder_bench():
    spec = importlib.util.spec_from_file_location("encoder_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def reviews_csv(tmp_path):
    rng = random.Random(0)
    good, bad = ["great", "moving", "sharp", "funny"], ["dull", "flat", "tedious", "messy"]
    lines = ["text,label,split"]
    for i in range(120):
        label = i % 2
        words = rng.choices(good if label else bad, k=4) + rng.choices(good + bad, k=2)
        split = "eval" if i % 5 == 0 else "calibration" if i % 5 == 1 else "train"
        lines.append(f"{' '.join(words)} film,{'fresh' if label else 'rotten'},{split}")
    p = tmp_path / "reviews.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_paired_drop_interval(encoder_bench):
    labels = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    teacher = labels.clone()
    same = encoder_bench.paired_drop(teacher, labels.clone(), labels)
    assert same == [0.0, 0.0]
    worse = torch.tensor([0, 1, 1, 1, 0, 0, 0, 1])  # two more errors: 25 points lower
    lo, hi = encoder_bench.paired_drop(teacher, worse, labels)
    assert lo < 25 < hi


def test_predict_matches_slimlm_evaluate(encoder_bench, reviews_csv):
    corpus = load_data(str(reviews_csv))
    model = load("tiny:bert", num_labels=2)
    docs = corpus.split("eval")
    logits = encoder_bench.predict(model, docs, seq_len=64, batch_size=5)  # length-sorted batches
    q = encoder_bench.quality(logits, torch.tensor([d.label for d in docs]), None)
    ref = evaluate(model, corpus, seq_len=64, max_examples=None)
    assert q["accuracy"] == pytest.approx(ref["accuracy"]) and q["f1"] == pytest.approx(ref["f1"])


def test_quick_run_writes_every_arm_and_resumes(encoder_bench, reviews_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMLM_CACHE", str(tmp_path / "cache"))
    argv = ["--quick", "--data", str(reviews_csv), "--teacher", "tiny:bert", "--results", str(tmp_path / "res"),
            "--prune", "layers=1,heads=0.5,hidden=0.5,ffn=0.5", "--eval-examples", "24", "--hidden-weight", "1"]
    out = encoder_bench.main(argv)
    names = {r["variant"]: r for r in out["variants"]}
    assert set(names) == {"teacher", "q-int8", "q-int8emb", "p1-pruned", "p1-distilled", "p1-int8", "p1-int8emb"}
    assert names["p1-distilled"]["params"] < names["teacher"]["params"]
    assert names["p1-int8"]["disk_mb"] < names["p1-distilled"]["disk_mb"] < names["teacher"]["disk_mb"]
    assert names["q-int8"]["size_ratio"] > 1.5 and names["teacher"]["accuracy_drop"] == 0
    assert names["q-int8"]["disk_mb"] < names["q-int8emb"]["disk_mb"] < names["teacher"]["disk_mb"]
    assert out["stages"]["q-int8emb"]["quantized"] == 1  # the word embeddings only
    assert "hidden" in out["stages"]["p1-distill"]["final_losses"]  # hidden-state transfer through projections
    assert all(isinstance(t["met"], bool) for t in out["targets"]) and len(out["targets"]) == 4
    saved = json.loads((tmp_path / "res" / "encoder-quick.json").read_text())
    assert saved["variants"] == json.loads(json.dumps(out["variants"]))
    md = (tmp_path / "res" / "encoder-quick.md").read_text()
    assert "QUICK MODE" in md and ("MET" in md or "MISSED" in md)
    # a rerun resumes from the partial results: no stage runs again, so no stage's CPU time changes
    again = encoder_bench.main(argv)
    assert again["stages"] == out["stages"]
