"""The trainer on tiny models: distillation lowers KL to the teacher, resume is exact, caching, schedule."""

import math

import pytest
import torch
import yaml
from pydantic import ValidationError

from slimlm.distill import DistillConfig, distill_run, lr_factor
from slimlm.errors import ConfigError
from slimlm.evaluate import evaluate
from slimlm.models import load
from slimlm.testing.students import drop_layers

SMALL = "tiny:llama?layers=2&hidden=32&heads=2&kv_heads=1&ffn=64&seed=1"


def kl_to(student, teacher, corpus):
    return evaluate(student, corpus, seq_len=128, max_tokens=2048, teacher=teacher)["teacher_agreement"]["kl"]


def test_distillation_lowers_kl_to_teacher(teacher, corpus):
    student = load(SMALL)  # narrower, shallower, randomly initialised
    before = kl_to(student, teacher, corpus)
    cfg = DistillConfig(steps=30, lr=3e-3, seq_len=64, batch_size=4, warmup_steps=3)
    res = distill_run(student, teacher, corpus, cfg)
    after = kl_to(student, teacher, corpus)
    print(before, after)
    assert before > 0.5
    assert after < 0.6 * before, (before, after)
    assert res.steps == 30 and res.tokens == 30 * 4 * 64
    assert student.hash != teacher.hash


@pytest.mark.parametrize("loss", ["reverse-kl", "jsd", "topk"])
def test_other_kd_losses_lower_kl(teacher, corpus, loss):
    student = load(SMALL)
    before = kl_to(student, teacher, corpus)
    distill_run(student, teacher, corpus, DistillConfig(loss=loss, steps=15, lr=3e-3, seq_len=64, top_k=16))
    assert kl_to(student, teacher, corpus) < 0.8 * before


def test_hidden_attention_relation_terms_train_a_narrower_student(teacher, corpus):
    student = load(SMALL)
    cfg = DistillConfig(steps=12, lr=3e-3, seq_len=64, hidden_weight=1.0, attention_weight=0.5,
                        relation_weight=1.0, hidden_loss="mse")
    res = distill_run(student, teacher, corpus, cfg)
    first, last = res_losses(res)
    assert set(first) >= {"kd", "hidden", "attention", "relation"}
    assert last["hidden"] < first["hidden"]  # the projection + student learn the teacher's hidden states
    assert last["loss"] < first["loss"]


def res_losses(res):
    """Mean of each loss term over the first and the last three steps."""
    def avg(rows):
        return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k not in ("step", "lr")}
    return avg(res.history[:3]), avg(res.history[-3:])


def _weights(model):
    return {k: v.clone() for k, v in model.hf.state_dict().items()}


def test_resume_after_kill_matches_uninterrupted_run(teacher, corpus, tmp_path):
    cfg = DistillConfig(steps=6, lr=3e-3, seq_len=64, batch_size=2, grad_accum=2, warmup_steps=2,
                        checkpoint_every=2, hidden_weight=1.0, eval_every=3, eval_tokens=128)
    ref = load(SMALL)
    ref_res = distill_run(ref, teacher, corpus, cfg, checkpoint_dir=tmp_path / "a")

    killed = load(SMALL)

    def kill_at_3(m):
        if m.get("step") == 3 and "eval" not in m:
            raise KeyboardInterrupt  # as if the process died during step 4's work

    with pytest.raises(KeyboardInterrupt):
        distill_run(killed, teacher, corpus, cfg, checkpoint_dir=tmp_path / "b", on_metrics=kill_at_3)
    resumed = load(SMALL)  # a fresh process would rebuild the student from its spec
    res = distill_run(resumed, teacher, corpus, cfg, checkpoint_dir=tmp_path / "b", resume=True)
    assert res.resumed_from == 2
    a, b = _weights(ref), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert res.tokens == ref_res.tokens and res.steps == ref_res.steps
    assert [e["perplexity"] for e in res.eval_curve] == [e["perplexity"] for e in ref_res.eval_curve]


def test_resume_refuses_changed_settings(teacher, corpus, tmp_path):
    cfg = DistillConfig(steps=4, seq_len=32, checkpoint_every=2)
    distill_run(load(SMALL), teacher, corpus, cfg, checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="lr"):
        distill_run(load(SMALL), teacher, corpus, cfg.model_copy(update={"lr": 1e-3}), checkpoint_dir=tmp_path,
                    resume=True)


def test_a_run_resumes_with_gradient_checkpointing_turned_on_and_ends_where_it_would_have(teacher, corpus, tmp_path):
    cfg = DistillConfig(steps=4, lr=3e-3, seq_len=32, batch_size=2, warmup_steps=1, checkpoint_every=2)
    ref = load(SMALL)
    distill_run(ref, teacher, corpus, cfg, checkpoint_dir=tmp_path / "a")

    def kill_at_3(m):
        if m.get("step") == 3 and "eval" not in m:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill_run(load(SMALL), teacher, corpus, cfg, checkpoint_dir=tmp_path / "b", on_metrics=kill_at_3)
    # as after an out-of-memory kill: the same run, now recomputing activations and checkpointing every step
    resumed = load(SMALL)
    res = distill_run(resumed, teacher, corpus, cfg.model_copy(update={"gradient_checkpointing": True,
                                                                       "checkpoint_every": 1}),
                      checkpoint_dir=tmp_path / "b", resume=True)
    assert res.resumed_from == 2 and res.steps == 4
    a, b = _weights(ref), _weights(resumed)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-7, msg=k)


def test_early_stopping_stops_and_restores_best(teacher, corpus):
    student = drop_layers(teacher, [0, 3])
    cfg = DistillConfig(steps=50, lr=1e-12, seq_len=32, eval_every=1, eval_tokens=256, patience=2)
    res = distill_run(student, teacher, corpus, cfg)
    assert res.stopped_early and res.steps == 3 and res.best_step == 1


def test_teacher_topk_cache_is_reused(teacher, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMLM_CACHE", str(tmp_path))
    cfg = DistillConfig(loss="topk", top_k=8, cache_teacher=True, steps=4, seq_len=32, lr=3e-3)
    s1, s2 = drop_layers(teacher, [0, 3]), drop_layers(teacher, [0, 3])
    r1 = distill_run(s1, teacher, corpus, cfg)
    r2 = distill_run(s2, teacher, corpus, cfg)
    assert r1.cache["misses"] == 16 and r1.cache["hits"] == 0
    assert r2.cache["hits"] == 16 and r2.cache["misses"] == 0
    # fp16 storage of the top-k logits changes the loss only marginally
    assert r2.final_losses["kd"] == pytest.approx(r1.final_losses["kd"], rel=1e-2)


def test_lr_schedule_warmup_then_cosine():
    cfg = DistillConfig(steps=10, warmup_steps=2, min_lr_ratio=0.1)
    f = [lr_factor(s, cfg) for s in range(10)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0) and f[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[2:], f[3:], strict=False))
    assert lr_factor(10, cfg) == pytest.approx(0.1)
    assert f[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))


def test_config_validation_names_field_and_round_trips_yaml():
    with pytest.raises(ValidationError, match="temperature"):
        DistillConfig(temperature=0)
    with pytest.raises(ValidationError, match="lossy"):
        DistillConfig(lossy="kl")
    with pytest.raises(ValidationError, match="cache_teacher"):
        DistillConfig(cache_teacher=True)
    cfg = DistillConfig(loss="jsd", beta=0.3, layer_map=[(0, 1), (1, 3)], hidden_weight=0.5)
    back = DistillConfig.model_validate(yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json"))))
    assert back == cfg


def test_user_errors_are_clear(teacher, corpus):
    with pytest.raises(ConfigError, match="needs a teacher"):
        distill_run(load(SMALL), None, corpus, DistillConfig(steps=1))
    with pytest.raises(ConfigError, match="out of range"):
        distill_run(load(SMALL), teacher, corpus, DistillConfig(steps=1, hidden_weight=1, layer_map=[(5, 0)]))


def test_a_time_budget_stops_at_a_step_with_a_checkpoint_and_resume_ends_where_a_whole_run_does(teacher, corpus,
                                                                                                 tmp_path):
    cfg = DistillConfig(steps=5, lr=3e-3, seq_len=32, batch_size=2, warmup_steps=1, eval_every=2, eval_tokens=128)
    ref = load(SMALL)
    whole = distill_run(ref, teacher, corpus, cfg, checkpoint_dir=tmp_path / "a")
    assert whole.out_of_time is None and whole.steps == 5
    cut = load(SMALL)
    first = distill_run(cut, teacher, corpus, cfg, checkpoint_dir=tmp_path / "b", max_seconds=0)
    assert first.out_of_time == 1 and first.steps == 1  # every call makes one step before it looks at the clock
    assert (tmp_path / "b").is_dir()  # the budget writes a checkpoint although checkpoint_every is 0
    assert first.summary()["out_of_time"] == 1
    again = distill_run(load(SMALL), teacher, corpus, cfg, checkpoint_dir=tmp_path / "b", resume=True, max_seconds=0)
    assert again.resumed_from == 1 and again.out_of_time == 2
    resumed = load(SMALL)
    last = distill_run(resumed, teacher, corpus, cfg, checkpoint_dir=tmp_path / "b", resume=True)
    assert last.resumed_from == 2 and last.out_of_time is None and last.steps == 5
    a, b = _weights(ref), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["perplexity"] for e in last.eval_curve] == [e["perplexity"] for e in whole.eval_curve]


def test_a_time_budget_needs_somewhere_to_keep_the_checkpoint(teacher, corpus):
    with pytest.raises(ConfigError, match="checkpoint directory"):
        distill_run(load(SMALL), teacher, corpus, DistillConfig(steps=2, seq_len=32), max_seconds=10)
