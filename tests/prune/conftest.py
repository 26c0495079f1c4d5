"""Tiny models for the pruning tests: a Llama trained for a few dozen steps, and a BPE-tokenized Llama."""

import copy

import pytest
import torch

from slimlm.data import load_data, pack
from slimlm.models import Model, load
from slimlm.prune import Calibration

TINY = "tiny:llama?layers=3&hidden=64&heads=4&kv_heads=2&ffn=128&seed=0"


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models run fastest on one thread; on a shared, oversubscribed CPU two threads are ~40x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _texts():
    docs = load_data("pydoc")  # stdlib docstrings: real English, always available, no download
    return docs.texts("train")[:40], docs.texts("eval")[:10]


def loss(model: Model, windows: torch.Tensor) -> float:
    with torch.inference_mode():
        return model.hf(input_ids=windows, labels=windows, use_cache=False).loss.item()


def train(model: Model, rows: torch.Tensor, steps: int = 200, lr: float = 5e-3, batch: int = 16) -> None:
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.hf.parameters(), lr=lr)
    model.hf.train()
    for _ in range(steps):
        idx = torch.randint(0, rows.shape[0], (batch,), generator=g)
        out = model.hf(input_ids=rows[idx], labels=rows[idx], use_cache=False)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.hf.eval()
    model.rehash()


@pytest.fixture(scope="session")
def data():
    train_texts, eval_texts = _texts()
    return train_texts, eval_texts


@pytest.fixture(scope="session")
def _trained(data):
    m = load(TINY)
    rows = pack(m.tokenizer, data[0], 64)
    train(m, rows)
    return m


@pytest.fixture
def trained(_trained):
    """A fresh copy of the trained tiny Llama (tests prune it in place)."""
    m = _trained
    return Model(hf=copy.deepcopy(m.hf), tokenizer=m.tokenizer, spec=m.spec, provenance=copy.deepcopy(m.provenance))


@pytest.fixture(scope="session")
def calib(_trained, data):
    rows = pack(_trained.tokenizer, data[0], 64)
    g = torch.Generator().manual_seed(1)
    return Calibration(rows[torch.randperm(rows.shape[0], generator=g)[:16]], texts=data[0], batch_size=8)


@pytest.fixture(scope="session")
def eval_windows(_trained, data):
    return pack(_trained.tokenizer, data[1], 64)[:16]


@pytest.fixture(scope="session")
def bpe_llama(data):
    """A tiny Llama whose tokenizer is a real byte-level BPE (trained here on docstrings, 600 tokens)."""
    from slimlm.testing.bpe import bpe_llama as build

    return build(data[0] + data[1], 600)


@pytest.fixture(scope="session")
def lm_loss():
    return loss
