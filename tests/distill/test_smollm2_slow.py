"""Real model (slow): a few distillation steps bring a layer-dropped SmolLM2 closer to its teacher."""

import pytest
import torch

from slimlm.data import load_data
from slimlm.distill import DistillConfig, distill_run
from slimlm.evaluate import evaluate
from slimlm.models import load
from slimlm.testing.students import drop_layers


@pytest.mark.slow
def test_smollm2_kd_lowers_kl_and_perplexity():
    torch.set_num_threads(1)
    corpus = load_data("shakespeare")
    teacher = load("builtin:smollm2-135m")
    student = drop_layers(teacher, [i for i in range(30) if i not in (11, 13, 15, 17, 19, 21)])
    before = evaluate(student, corpus, max_tokens=1024, teacher=teacher)
    res = distill_run(student, teacher, corpus, DistillConfig(steps=4, lr=5e-4, batch_size=2, seq_len=128,
                                                              hidden_weight=1.0))
    after = evaluate(student, corpus, max_tokens=1024, teacher=teacher)
    assert res.steps == 4
    assert after["teacher_agreement"]["kl"] < before["teacher_agreement"]["kl"]
    assert after["perplexity"] < before["perplexity"]
