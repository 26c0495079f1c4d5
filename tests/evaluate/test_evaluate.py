import math

import pytest
import torch

from slimlm.data import Corpus, Document, eval_windows, load_data
from slimlm.errors import DataError
from slimlm.evaluate import ECEAccumulator, evaluate, kl_teacher_student, macro_f1
from slimlm.models import load


def _hf_perplexity(m, windows) -> tuple[float, int]:
    """Perplexity from plain Hugging Face losses, one window at a time, and the number of predicted tokens."""
    nll = n = 0
    with torch.no_grad():
        for w in windows:
            nll += m.hf(w[None], labels=w[None]).loss.item() * (len(w) - 1)
            n += len(w) - 1
    return math.exp(nll / n), n


def test_perplexity_matches_plain_hf_loss(text_file):
    m = load("tiny:llama")
    corpus = load_data(str(text_file))
    res = evaluate(m, corpus, seq_len=64, max_tokens=1000)
    windows = eval_windows(m.tokenizer, corpus.texts("eval"), 64, 1000)
    ppl, n = _hf_perplexity(m, windows)
    assert res["tokens"] == n
    assert res["perplexity"] == pytest.approx(ppl, rel=1e-4)


DECODERS = ["tiny:llama", "tiny:qwen2", "tiny:qwen3", "tiny:gemma2", "tiny:gemma3", "tiny:mistral", "tiny:phi3"]


def _short_docs(n: int = 30) -> Corpus:
    words = "the quick brown fox jumps over a lazy dog while seven wizards box and hum".split()
    docs = [Document(" ".join(words[(i * 3 + j) % len(words)] for j in range(2 + (i * 7) % 19)), "short")
            for i in range(n)]
    return Corpus(name="short", splits={"eval": docs})


@pytest.mark.parametrize("spec", DECODERS)
def test_short_documents_batched_per_forward_score_as_one_window_at_a_time(spec):
    """Short windows share a right-padded forward pass; each window must still score what it scores alone."""
    from slimlm.evaluate.core import _batches

    m = load(spec)
    corpus = _short_docs()
    windows = eval_windows(m.tokenizer, corpus.texts("eval"), 64, None)
    lengths = {len(w) for w in windows}
    assert len(lengths) > 3 and max(len(g) for g in _batches(windows)) > 4  # the case under test: mixed, batched
    res = evaluate(m, corpus, seq_len=64, max_tokens=None, teacher=load(spec))
    ppl, n = _hf_perplexity(m, windows)
    assert res["tokens"] == n
    assert res["perplexity"] == pytest.approx(ppl, rel=1e-4)
    assert res["teacher_agreement"]["top1"] == 1.0  # the teacher's batch lines up with the student's


def test_batches_cover_every_window_once_within_the_padded_budget():
    from slimlm.evaluate.core import _batches

    windows = [torch.zeros(n, dtype=torch.long) for n in (3, 600, 40, 2, 512, 100, 7, 7, 250, 33)]
    groups = _batches(windows, budget=512)
    assert sorted(i for g in groups for i in g) == list(range(len(windows)))
    for g in groups:
        padded = len(g) * max(len(windows[i]) for i in g)
        assert padded <= 512 or len(g) == 1, (g, padded)
    assert [1] in groups and [4] in groups  # a window of the budget or longer goes alone
    assert len(groups) < len(windows)


def test_self_agreement_is_perfect_and_other_model_is_not(text_file):
    m = load("tiny:llama")
    corpus = load_data(str(text_file))
    same = evaluate(m, corpus, seq_len=64, max_tokens=300, teacher=load("tiny:llama"))
    assert same["teacher_agreement"]["top1"] == 1.0
    assert same["teacher_agreement"]["kl"] == pytest.approx(0.0, abs=1e-6)
    other = evaluate(m, corpus, seq_len=64, max_tokens=300, teacher=load("tiny:llama?seed=3"))
    assert other["teacher_agreement"]["top1"] < 0.9 and other["teacher_agreement"]["kl"] > 0.01


def test_seq_len_beyond_model_maximum_fails(text_file):
    m = load("tiny:llama?max_pos=128")
    with pytest.raises(DataError, match="exceeds the model's maximum of 128"):
        evaluate(m, load_data(str(text_file)), seq_len=256)


def test_ece_on_known_bins():
    e = ECEAccumulator(bins=10)
    # 4 predictions at confidence 0.95, half right: |0.95 - 0.5| = 0.45; 4 at 0.55, all right: 0.45
    e.update(torch.tensor([0.95] * 4 + [0.55] * 4), torch.tensor([1, 1, 0, 0, 1, 1, 1, 1]).bool())
    assert e.value() == pytest.approx(0.45)
    perfect = ECEAccumulator()
    perfect.update(torch.tensor([1.0, 1.0]), torch.tensor([True, True]))
    assert perfect.value() == pytest.approx(0.0)


def test_kl_and_macro_f1_against_hand_values():
    t = torch.tensor([[0.0, math.log(3.0)]])  # teacher probs 1/4, 3/4
    s = torch.tensor([[0.0, 0.0]])  # student probs 1/2, 1/2
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert kl_teacher_student(t, s).item() == pytest.approx(expected, rel=1e-5)
    pred, target = torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 0])
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp0 fn1 -> 0.8; class 2: tp0 fp1 fn0 -> 0
    assert macro_f1(pred, target, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_classifier_accuracy_f1_and_calibration():
    m = load("tiny:bert?labels=2")
    docs = [Document("good " * (i % 5 + 1), f"d{i}", i % 2) for i in range(20)]
    corpus = Corpus("toy", {"train": docs, "calibration": docs, "eval": docs}, labels=["a", "b"])
    res = evaluate(m, corpus, seq_len=32, batch_size=8)
    assert res["examples"] == 20 and 0 <= res["accuracy"] <= 1 and 0 <= res["f1"] <= 1
    with torch.no_grad():
        enc = m.tokenizer([d.text for d in docs], padding=True, return_tensors="pt")
        pred = m.hf(**enc).logits.argmax(-1)
    target = torch.tensor([d.label for d in docs])
    acc = (pred == target).float().mean().item()
    assert res["accuracy"] == pytest.approx(acc)
    assert res["f1"] == pytest.approx(macro_f1(pred, target, 2))
    assert res["perplexity"] is None and res["ece"] >= 0


def test_a_classifier_is_scored_by_its_own_label2id_when_it_names_the_datas_labels():
    """A head trained with the classes in another order (elsewhere, or by a slimlm that ordered integer labels
    as text) is scored against its own ids, not the data's order."""
    m = load("tiny:bert?labels=3")
    docs = [Document("word " * (i % 7 + 1), f"d{i}", 0 if i < 18 else 1 if i < 26 else 2) for i in range(30)]
    corpus = Corpus("toy", {"train": docs, "calibration": docs, "eval": docs}, labels=["2", "10", "11"])
    with torch.no_grad():
        enc = m.tokenizer([d.text for d in docs], padding=True, return_tensors="pt")
        pred = m.hf(**enc).logits.argmax(-1)
    m.hf.config.label2id = {"10": 0, "11": 1, "2": 2}  # text order: the head's class 0 is label "10"
    m.hf.config.id2label = {v: k for k, v in m.hf.config.label2id.items()}
    target = torch.tensor([m.hf.config.label2id[corpus.labels[d.label]] for d in docs])
    data_order = torch.tensor([d.label for d in docs])
    assert (pred == target).float().mean() != (pred == data_order).float().mean()  # the test can tell them apart
    assert evaluate(m, corpus, seq_len=32, batch_size=8)["accuracy"] == pytest.approx((pred == target).float().mean().item())


def test_classifier_needs_labels_and_encoder_needs_head(text_file):
    with pytest.raises(DataError, match="no labels"):
        evaluate(load("tiny:bert?labels=2"), load_data(str(text_file)))
    with pytest.raises(DataError, match="without a task head"):
        evaluate(load("tiny:bert"), load_data(str(text_file)))
    with pytest.raises(DataError, match="6 labels"):
        evaluate(load("tiny:bert?labels=2"), load_data("shakespeare-genre"), max_examples=4)
