"""What trains: frozen embeddings / lowest blocks stay bit-identical, the rest learns, keys stay stable."""

import copy

import pytest
import torch

from slimlm.distill import DistillConfig, distill_run
from slimlm.errors import ConfigError
from slimlm.models import Model
from slimlm.recipes import recipe_from_dict


def _student(teacher):
    s = Model(hf=copy.deepcopy(teacher.hf), tokenizer=teacher.tokenizer, spec="tiny-student",
              provenance={"spec": "tiny-student", "stages": []})
    with torch.no_grad():  # a perturbed copy, so there is something to recover
        for p in s.hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return s


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.hf.state_dict().items()}


def test_freeze_layers_keeps_embeddings_and_lowest_blocks_fixed_and_trains_the_rest(teacher, corpus):
    student = _student(teacher)
    before = _snapshot(student)
    cfg = DistillConfig(steps=4, lr=3e-3, seq_len=64, batch_size=2, freeze_layers=2)
    distill_run(student, teacher, corpus, cfg)
    after = student.hf.state_dict()
    frozen = [k for k in before if k.startswith(("model.embed_tokens", "model.layers.0.", "model.layers.1."))]
    trained = [k for k in before if k.startswith(("model.layers.2.", "model.layers.3."))]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in trained if k.endswith("proj.weight"))
    # the model is left trainable for whatever stage comes next
    assert all(p.requires_grad for p in student.hf.parameters())


def test_freeze_embeddings_keeps_the_tied_matrix_and_trains_every_block(teacher, corpus):
    student = _student(teacher)
    assert student.hf.get_output_embeddings().weight is student.hf.get_input_embeddings().weight  # tied
    before = _snapshot(student)
    distill_run(student, teacher, corpus, DistillConfig(steps=3, lr=3e-3, seq_len=64, batch_size=2,
                                                        freeze_embeddings=True))
    after = student.hf.state_dict()
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert not torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])


def test_freezing_stops_the_backward_pass_below_the_first_trained_block(teacher, corpus):
    """The point of freeze_layers: no gradient reaches a frozen block, so its backward is never computed."""
    student = _student(teacher)
    reached = []
    layer0 = student.adapter.layers()[0]
    layer0.register_full_backward_hook(lambda *a: reached.append(0))
    distill_run(student, teacher, corpus, DistillConfig(steps=1, seq_len=32, batch_size=1, freeze_layers=1))
    assert reached == []
    distill_run(student, teacher, corpus, DistillConfig(steps=1, seq_len=32, batch_size=1))
    assert reached  # without freezing the hook fires: the check above could fail


def test_freezing_every_block_is_refused(teacher, corpus):
    student = _student(teacher)
    with pytest.raises(ConfigError, match="freeze_layers=4 leaves nothing to train"):
        distill_run(student, teacher, corpus, DistillConfig(steps=1, seq_len=32, batch_size=1, freeze_layers=4))
    assert all(p.requires_grad for p in student.hf.parameters())


def _stage(**body):
    return recipe_from_dict({"name": "r", "stages": [{"distill": body}]}).stages[0]


def test_new_options_at_their_defaults_keep_the_stage_cache_key():
    plain = _stage(steps=10)
    explicit = _stage(steps=10, freeze_embeddings=False, freeze_layers=0, teacher_precision="auto",
                      gradient_checkpointing=False)
    assert plain.key() == explicit.key()
    assert _stage(steps=10, freeze_layers=2).key() != plain.key()
    assert _stage(steps=10, freeze_embeddings=True).key() != plain.key()
    assert _stage(steps=10, teacher_precision="bfloat16").key() != plain.key()
    assert _stage(steps=10, gradient_checkpointing=True).key() != plain.key()
    # the digest the code gave this stage before the freeze options existed: cached runs still resume
    assert plain.key() == "0bb44e8a986eb3ed"


def test_a_checkpoint_that_does_not_fit_leaves_the_student_trainable_and_no_temp_file(teacher, corpus, tmp_path):
    from slimlm._io import cache_dir
    from slimlm.models import load

    cfg = DistillConfig(steps=3, seq_len=32, batch_size=2, checkpoint_every=1, freeze_embeddings=True)
    distill_run(_student(teacher), teacher, corpus, cfg, checkpoint_dir=tmp_path / "ck")
    other = load("tiny:llama?layers=2&hidden=32&heads=2&kv_heads=1&ffn=64&seed=3")  # another shape
    with pytest.raises(ConfigError, match="does not fit this student"):
        distill_run(other, teacher, corpus, cfg, checkpoint_dir=tmp_path / "ck", resume=True)
    assert all(p.requires_grad for p in other.hf.parameters())  # the frozen embeddings were given back
    assert not list(cache_dir("weights-stash").iterdir())
