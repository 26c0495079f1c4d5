"""Distilling a vocabulary-trimmed student (structured ``vocab=domain``) from its full-vocabulary parent."""

import copy
import math

import pytest
import torch

from slimlm.calibration import Calibration
from slimlm.distill import DistillConfig, distill, distill_run
from slimlm.distill.trainer import _Step, teacher_vocab_map
from slimlm.errors import ConfigError
from slimlm.models import Model
from slimlm.prune import parse_structured, prune_
from slimlm.testing.bpe import bpe_llama


@pytest.fixture(scope="module")
def parent(corpus):
    """A tiny byte-level-BPE Llama, fine-tuned a little so that its next-token distributions are peaked."""
    m = bpe_llama(corpus.texts("train") + corpus.texts("eval"), 600)
    distill(m, None, corpus, DistillConfig(loss="ce", alpha=1.0, steps=20, lr=1e-2, seq_len=64, batch_size=8,
                                           warmup_steps=2))
    return m


def _trimmed(parent: Model, texts: list[str], spec: str = "vocab=domain") -> Model:
    m = Model(hf=copy.deepcopy(parent.hf), tokenizer=parent.tokenizer, spec="trimmed",
              provenance={"spec": "trimmed", "stages": []})
    prune_(m, parse_structured(spec), Calibration(torch.randint(5, 200, (2, 32)), texts=texts))
    return m


def test_trimmed_copy_of_the_teacher_has_zero_kd_loss(parent, corpus):
    """The teacher reads the student's text in its own ids and its logits are cut to the student's tokens:
    a student that is the teacher minus unused vocabulary rows matches it exactly (KL 0). Feeding the
    student's renumbered ids to the teacher unmapped would give a large KL."""
    student = _trimmed(parent, corpus.texts("train")[:1])
    vmap = teacher_vocab_map(student, parent)
    assert vmap is not None and vmap.numel() == student.adapter.vocab_size < parent.adapter.vocab_size
    cfg = DistillConfig(loss="kl", steps=1, seq_len=32, batch_size=2)
    step = _Step(student, parent, cfg, "causal-lm", 0)
    text = corpus.texts("train")[0][:600]
    ids = torch.tensor([student.tokenizer(text, add_special_tokens=False)["input_ids"][:32]] * 2)
    _, parts = step(torch.zeros(2, dtype=torch.long), {"input_ids": ids})
    assert parts["kd"] == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():  # the same batch without the map: the teacher reads the wrong tokens
        wrong = parent.hf(input_ids=ids).logits[..., :student.adapter.vocab_size]
        s_logits = student.hf(input_ids=ids).logits
    assert float(torch.nn.functional.kl_div(s_logits.log_softmax(-1), wrong.log_softmax(-1), log_target=True,
                                            reduction="batchmean")) > 0.1


def test_pruned_trimmed_student_distils_and_improves(parent, corpus):
    student = _trimmed(parent, corpus.texts("train"), "layers=1,vocab=domain")
    res = distill_run(student, parent, corpus, DistillConfig(loss="kl", steps=12, lr=3e-3, seq_len=32,
                                                             batch_size=4, warmup_steps=1))
    losses = [h["kd"] for h in res.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) < sum(losses[:3])


def test_unrelated_vocabularies_are_refused(parent, corpus):
    a = _trimmed(parent, corpus.texts("train")[:1])
    b = _trimmed(parent, corpus.texts("eval")[:1])
    if a.provenance["vocab_map"] == b.provenance["vocab_map"]:
        pytest.skip("both texts kept the same tokens")
    with pytest.raises(ConfigError, match="vocabulary-trimmed variant"):
        teacher_vocab_map(a, b)
    assert teacher_vocab_map(a, a) is None  # the same trimmed vocabulary: ids already agree


def test_evaluate_reports_bits_per_byte_and_drops_across_vocabularies_use_them(parent, corpus):
    """A trimmed vocabulary splits out-of-domain words into more, easier tokens: per-token perplexity
    flatters it, bits per byte do not. The drop against the parent comes from bits per byte."""
    from slimlm.evaluate import evaluate, perplexity_drop

    trimmed = _trimmed(parent, corpus.texts("train")[:1])
    a = evaluate(parent, corpus, split="eval", seq_len=64, max_tokens=None)
    b = evaluate(trimmed, corpus, split="eval", seq_len=64, max_tokens=None)
    assert b["bytes_per_token"] < a["bytes_per_token"]  # the trimmed tokenizer needs more tokens for the text
    assert a["bits_per_byte"] == pytest.approx(a["nll"] / math.log(2) / a["bytes_per_token"], rel=1e-9)
    drop = perplexity_drop(b["perplexity"], a["perplexity"], b["bits_per_byte"], a["bits_per_byte"],
                           b["bytes_per_token"], a["bytes_per_token"])
    assert drop == pytest.approx(2 ** ((b["bits_per_byte"] - a["bits_per_byte"]) * a["bytes_per_token"]) - 1)
    same = perplexity_drop(a["perplexity"], a["perplexity"], a["bits_per_byte"], a["bits_per_byte"],
                           a["bytes_per_token"], a["bytes_per_token"])
    assert same == 0.0
