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
