import copy

import pytest
import torch

from slimlm.distill import DistillConfig, distill
from slimlm.models import Model, load
from slimlm.testing.students import small_corpus

# tiny models gain nothing from a second thread, and on a shared CPU OpenMP barriers make two threads slower
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def corpus():
    return small_corpus(chars=20_000, plays=3)


@pytest.fixture(scope="session")
def trained_teacher(corpus):
    """A tiny Llama fine-tuned for a few steps so its next-token distributions are far from uniform."""
    t = load("tiny:llama?layers=4&hidden=64&heads=4&kv_heads=2&ffn=128&seed=0")
    distill(t, None, corpus, DistillConfig(loss="ce", alpha=1.0, steps=20, lr=1e-2, seq_len=64, batch_size=8,
                                           warmup_steps=2))
    return t


@pytest.fixture
def teacher(trained_teacher):
    return Model(hf=copy.deepcopy(trained_teacher.hf), tokenizer=trained_teacher.tokenizer, spec="tiny-teacher",
                 provenance={"spec": "tiny-teacher", "stages": []})
