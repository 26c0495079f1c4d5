"""The classifier's example budget is spread over the whole eval split, not taken from its start.

Labelled splits are often grouped (a genre's plays in a row, one movie's reviews together): a sample taken
from the start of the split leaves whole labels out of the accuracy and F1.
"""

import pytest

from slimlm.data import Corpus, Document
from slimlm.evaluate import evaluate
from slimlm.evaluate.core import spread_sample
from slimlm.models import load

LABELS = ["comedies", "histories", "poems", "romances", "tragedies", "sonnets"]
PER_LABEL = 150  # 900 texts: more than the default budget of 512, fewer than twice it


def _grouped_corpus() -> Corpus:
    """6 labels x 150 texts, sorted by label; each text names its label and its position in the split."""
    docs = [Document(f"{name} passage {i}", f"{name}:{i}", k) for k, name in enumerate(LABELS)
            for i in range(PER_LABEL)]
    return Corpus("grouped", {"train": docs, "calibration": docs, "eval": docs}, labels=list(LABELS))


class _RecordingTokenizer:
    """The model's tokenizer, remembering every text the evaluation asks it to encode."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.texts: list[str] = []

    def __call__(self, texts, *args, **kwargs):
        self.texts += list(texts)
        return self._tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def test_a_512_example_sample_of_a_label_sorted_split_holds_every_label_and_both_ends():
    m = load(f"tiny:bert?labels={len(LABELS)}")
    spy = _RecordingTokenizer(m.tokenizer)
    m.tokenizer = spy
    corpus = _grouped_corpus()
    res = evaluate(m, corpus, seq_len=16, max_examples=512, batch_size=128)
    assert res["examples"] == 512 and len(spy.texts) == 512
    assert len(set(spy.texts)) == 512  # no example scored twice
    assert {t.split()[0] for t in spy.texts} == set(LABELS)
    assert any(t.startswith(LABELS[0]) for t in spy.texts[:10])  # the first block
    assert any(t.startswith(LABELS[-1]) for t in spy.texts[-10:])  # the last block
    eval_texts = corpus.texts("eval")
    positions = [eval_texts.index(t) for t in spy.texts]
    assert positions[0] == 0 and positions[-1] >= len(eval_texts) - 2  # spans the whole split


@pytest.mark.parametrize("size,n", [(858, 512), (900, 512), (1000, 999), (12752, 512), (7, 3)])
def test_spread_sample_is_evenly_spaced_ordered_and_distinct(size, n):
    items = list(range(size))
    got = spread_sample(items, n)
    assert len(got) == n and got == sorted(set(got))
    assert got[0] == 0 and got[-1] >= size - size // n - 1
    gaps = {b - a for a, b in zip(got[:-1], got[1:], strict=True)}
    assert max(gaps) - min(gaps) <= 1  # even spacing, no stretch of the split left out
    assert spread_sample(items, n) == got  # deterministic


@pytest.mark.parametrize("n", [None, 0, 5, 6])
def test_spread_sample_keeps_everything_within_the_budget(n):
    items = list("abcde")
    assert spread_sample(items, n) == items
