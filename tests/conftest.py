import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)  # tiny models: thread overhead dominates, and CI may share the machine


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from a second thread, and on a shared CPU spinning threads cost a lot; a test
    that changes the count does not leak it into the next."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never write to the user's cache, except the converted SmolLM2 (slow tests reuse it)."""
    if os.environ.get("SLIMLM_TEST_REAL_CACHE") != "1":
        monkeypatch.setenv("SLIMLM_CACHE", str(tmp_path_factory.getbasetemp() / "slimlm-cache"))


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "sample.txt"
    p.write_text(
        "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
        "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date.\n" * 20
    )
    return p


@pytest.fixture
def labelled_file(tmp_path):
    """24 two-class rows (good / bad) as JSON lines: a classifier's data for finetune runs."""
    import json

    p = tmp_path / "labelled.jsonl"
    p.write_text("".join(json.dumps({"text": f"{w} film {i}", "label": w}) + "\n"
                         for i in range(12) for w in ("good", "bad")))
    return p


@pytest.fixture
def finetune_args(labelled_file):
    """``finetune_args(out, *extra)``: a two-step tiny finetune run on `labelled_file`, as CLI arguments."""
    def args(out, *extra):
        return ["finetune", "tiny:bert", "--data", str(labelled_file), "--steps", "2", "--batch-size", "2",
                "--seq-len", "16", "--warmup", "1", "--out", str(out), "--json", *extra]
    return args
