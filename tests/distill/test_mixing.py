"""Mixing a general corpus into distillation: the share per batch, determinism, and the effect on general text."""

import builtins

import pytest
import torch

from slimlm.data import load_data
from slimlm.distill import DistillConfig, distill_run
from slimlm.distill.data import LMBatches, MixedLMBatches
from slimlm.errors import ConfigError
from slimlm.models import load

SMALL = "tiny:llama?layers=2&hidden=32&heads=2&kv_heads=1&ffn=64&seed=1"


@pytest.fixture
def general_file(tmp_path):
    """Modern technical English, unlike the plays: the builtins' docstrings."""
    docs = [getattr(builtins, n).__doc__ or "" for n in sorted(dir(builtins)) if not n.startswith("_")]
    path = tmp_path / "general.txt"
    path.write_text("\n\n".join(d for d in docs if d) * 2)
    return path


def _streams(corpus, general_file, seq_len=32):
    tok = load(SMALL).tokenizer
    return (LMBatches(tok, corpus, seq_len, seed=0), LMBatches(tok, load_data(str(general_file)), seq_len, seed=1))


@pytest.mark.parametrize("share,batch", [(0.25, 4), (0.3, 10), (0.5, 2)])
def test_every_batch_holds_the_share_from_each_corpus(corpus, general_file, share, batch):
    dom, gen = _streams(corpus, general_file)
    mixed = MixedLMBatches(dom, gen, share)
    n_dom = len(dom)
    for step in range(40):
        ids, inputs = mixed.batch(step * batch, batch)
        assert (ids >= n_dom).sum().item() == round(share * batch)  # the share, exactly, in every batch
        assert torch.equal(inputs["input_ids"], mixed.rows[ids])
    ids, _ = mixed.batch(0, 1000)
    general = ids[ids >= n_dom] - n_dom
    assert len(general) == round(share * 1000)
    # general rows come from the general corpus, domain rows from the domain corpus, each walking its own shuffle
    assert torch.equal(mixed.rows[ids[ids >= n_dom]], gen.rows[general])
    first_epoch = general[: len(gen)].tolist()
    assert len(set(first_epoch)) == len(first_epoch)  # no general row repeats before all were seen


def test_mixing_is_a_function_of_the_position(corpus, general_file):
    dom, gen = _streams(corpus, general_file)
    a, b = MixedLMBatches(dom, gen, 0.25), MixedLMBatches(*_streams(corpus, general_file), 0.25)
    whole, _ = a.batch(0, 64)
    parts = torch.cat([b.batch(s, 8)[0] for s in range(0, 64, 8)])  # resumed / split across ranks: the same rows
    assert torch.equal(whole, parts)


def test_config_needs_both_fields_and_a_language_model(teacher, general_file):
    with pytest.raises(ValueError, match="general_share needs general_data"):
        DistillConfig(general_share=0.2)
    with pytest.raises(ValueError, match="general_data needs general_share"):
        DistillConfig(general_data="pydoc")
    with pytest.raises(ValueError):
        DistillConfig(general_data="pydoc", general_share=1.0)
    cfg = DistillConfig(general_data=str(general_file), general_share=0.25, steps=1, seq_len=32)
    assert DistillConfig.model_validate(cfg.model_dump()) == cfg
    from slimlm.testing.students import small_corpus

    genre = small_corpus(chars=4000, plays=2, base=load_data("shakespeare-genre"))
    clf = load("tiny:bert?labels=6")
    with pytest.raises(ConfigError, match="language models"):
        distill_run(clf, None, genre, cfg.model_copy(update={"loss": "ce", "alpha": 1.0}))


def test_trainer_feeds_the_share_and_resumes_on_the_same_rows(corpus, general_file, tmp_path, monkeypatch):
    """The training loop reads the mixed rows (a quarter general, every step), and a resumed run reads the rows
    the uninterrupted one read. (Whether mixing keeps general text better is for the benchmark: on these tiny
    models fine-tuning on the plays alone already teaches most of what general text needs, 256 -> 28
    perplexity, and mixing moved it only to 27.)"""
    from slimlm.distill import trainer

    seen: list[torch.Tensor] = []
    real = trainer._Step.__call__
    monkeypatch.setattr(trainer._Step, "__call__", lambda self, rows, inputs: (seen.append(rows), real(self, rows, inputs))[1])
    cfg = DistillConfig(loss="ce", alpha=1.0, steps=6, lr=1e-2, seq_len=32, batch_size=4, checkpoint_every=2,
                        general_data=str(general_file), general_share=0.25)
    n_dom = LMBatches(load(SMALL).tokenizer, corpus, 32, seed=0).rows.shape[0]
    ref = load(SMALL)
    distill_run(ref, None, corpus, cfg, checkpoint_dir=tmp_path / "a")
    assert len(seen) == 6 and all(int((r >= n_dom).sum()) == 1 for r in seen)
    uninterrupted, seen[:] = list(seen), []

    def kill_at_3(m):
        if m.get("step") == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill_run(load(SMALL), None, corpus, cfg, checkpoint_dir=tmp_path / "c", on_metrics=kill_at_3)
    resumed, seen[:] = load(SMALL), []
    res = distill_run(resumed, None, corpus, cfg, checkpoint_dir=tmp_path / "c", resume=True)
    assert res.resumed_from == 2  # the checkpoint of step 2; steps 3-6 run again on the same rows
    assert len(seen) == 4 and all(torch.equal(a, b) for a, b in zip(uninterrupted[2:], seen, strict=True))
    for k, v in ref.hf.state_dict().items():
        assert torch.equal(resumed.hf.state_dict()[k], v), k
