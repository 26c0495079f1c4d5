"""The compress pipeline on tiny models: cache reuse across recipes, resume after a kill, the run dir."""

import json

import pytest

from slimlm.recipes import pipeline as pipeline_mod
from slimlm.recipes import recipe_from_dict
from slimlm.recipes.pipeline import RunOptions, compress

PRUNE = {"prune": {"method": "structured", "layers": 1, "ffn": 0.25}, "calibration": {"samples": 4, "seq_len": 32}}
DISTILL = {"distill": {"steps": 2, "seq_len": 32, "batch_size": 2}}
INT8 = {"quantize": {"scheme": "int8-dynamic"}}


def opts(text_file, **kw):
    return RunOptions(data=str(text_file), ood_data=kw.pop("ood_data", None), eval_tokens=128, seq_len=32, shapes=((1, 16),),
                      decode_tokens=2, repeats=2, profile=kw.pop("profile", False), teacher_agreement=False, **kw)


@pytest.fixture
def counting(monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline_mod, "run_stage", _counted(calls))
    return calls


def _counted(calls: list):
    run_stage = pipeline_mod.run_stage

    def wrapped(model, stage, ctx):
        calls.append(stage.kind)
        return run_stage(model, stage, ctx)

    return wrapped


def test_second_recipe_reuses_the_shared_prefix(tmp_path, text_file, counting):
    a = recipe_from_dict({"name": "a", "stages": [PRUNE, DISTILL]})
    b = recipe_from_dict({"name": "b", "stages": [PRUNE, DISTILL, INT8]})
    compress("tiny:llama", [a], tmp_path / "run", opts(text_file))
    assert counting == ["prune", "distill"]
    p2 = compress("tiny:llama", [b], tmp_path / "run", opts(text_file))
    assert counting == ["prune", "distill", "quantize"]  # prune and distill came from the cache
    ids = [v.id for v in p2.variants.values()]
    assert len(ids) == 4 and ids[0].startswith("base-")
    lines = (tmp_path / "run" / "variants.jsonl").read_text().splitlines()
    assert len(lines) == 4
    final = json.loads(lines[-1])
    assert [s["kind"] for s in final["stages"]] == ["prune", "distill", "quantize"]
    assert final["recovery"]["tokens"] == 2 * 2 * 32  # inherited from the distill stage
    assert final["metrics"]["perplexity"] > 1 and "quality_drop" in final["metrics"]
    base = json.loads(lines[0])
    assert base["is_baseline"] and base["metrics"]["quality_drop"] == 0


def test_killed_run_resumes_without_redoing_finished_stages(tmp_path, text_file, counting, monkeypatch):
    r = recipe_from_dict({"name": "r", "stages": [PRUNE, DISTILL, INT8]})
    from slimlm.distill import DistillConfig

    def killed(self, model, calib, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(DistillConfig, "apply", killed)
    with pytest.raises(KeyboardInterrupt):
        compress("tiny:llama", [r], tmp_path / "run", opts(text_file))
    cache = tmp_path / "run" / "cache"
    finished = [d for d in cache.iterdir() if not d.name.startswith(".")]
    assert len(finished) == 1  # the prune output; nothing half-written beside it
    assert not [d for d in cache.iterdir() if d.name.endswith(".tmp")]
    monkeypatch.undo()
    monkeypatch.setattr(pipeline_mod, "run_stage", _counted(counting))
    counting.clear()
    p = compress("tiny:llama", [r], tmp_path / "run", opts(text_file))
    assert counting == ["distill", "quantize"]  # the finished prune stage came from the cache
    assert len([d for d in cache.iterdir() if not d.name.startswith(".")]) == 3
    assert all(v.metrics.perplexity is not None for v in p.variants.values())


def test_profile_fills_efficiency_metrics(tmp_path, text_file):
    r = recipe_from_dict({"name": "r", "stages": [PRUNE]})
    p = compress("tiny:llama", [r], tmp_path / "run", opts(text_file, profile=True))
    base, pruned = list(p.variants.values())
    assert pruned.metrics.params < base.metrics.params
    assert pruned.metrics.latency_p50_ms > 0 and pruned.metrics.ratios["flops_1x16"] < 1
    assert pruned.metrics.disk_mb < base.metrics.disk_mb


def test_run_dir_of_another_model_is_refused(tmp_path, text_file):
    from slimlm.errors import ConfigError

    r = recipe_from_dict({"name": "r", "stages": [INT8]})
    compress("tiny:llama", [r], tmp_path / "run", opts(text_file))
    with pytest.raises(ConfigError, match="another --out"):
        compress("tiny:llama?layers=2", [r], tmp_path / "run", opts(text_file))


def test_each_out_of_domain_corpus_is_measured_and_the_guard_reads_the_worst(tmp_path, text_file):
    code = tmp_path / "code.txt"
    code.write_text("def add(a, b):\n    return a + b  # sum of two numbers\n" * 40)
    prose = tmp_path / "prose.txt"
    prose.write_text("The committee met on Tuesday to discuss the budget for next year.\n" * 40)
    r = recipe_from_dict({"name": "p", "stages": [PRUNE]})
    p = compress("tiny:llama", [r], tmp_path / "run", opts(text_file, ood_data=f" {code} , {prose}"))
    assert p.opts.ood_data == f"{code},{prose}"  # one spelling, so the same list resumes the run
    base = p.variants[p.base_id].metrics
    assert list(base.ood) == [str(code), str(prose)]
    assert all(x["quality_drop"] == 0 for x in base.ood.values())
    (pruned,) = [v.metrics for v in p.variants.values() if not v.is_baseline]
    drops = {c: x["quality_drop"] for c, x in pruned.ood.items()}
    assert set(drops) == {str(code), str(prose)} and drops[str(code)] != drops[str(prose)]
    assert pruned.ood_quality_drop == max(drops.values())  # the worst corpus, whichever it is
    assert pruned.ood_worst == max(drops, key=drops.get)
    assert pruned.ood_perplexity == pruned.ood[str(code)]["perplexity"]  # the scalar is the first corpus's
    saved = [json.loads(line) for line in (tmp_path / "run" / "variants.jsonl").read_text().splitlines()]
    assert {c for v in saved for c in v["metrics"]["ood"]} == {str(code), str(prose)}


def test_a_bad_out_of_domain_list_fails_before_any_work(text_file):
    from slimlm.errors import DataError

    with pytest.raises(DataError, match="twice"):
        opts(text_file, ood_data="pydoc,pydoc")


def test_a_resume_with_another_out_of_domain_list_measures_only_what_is_missing(tmp_path, text_file, counting,
                                                                                monkeypatch):
    import slimlm.evaluate as ev

    code = tmp_path / "code.txt"
    code.write_text("def add(a, b):\n    return a + b  # sum of two numbers\n" * 40)
    prose = tmp_path / "prose.txt"
    prose.write_text("The committee met on Tuesday to discuss the budget for next year.\n" * 40)
    r = recipe_from_dict({"name": "p", "stages": [PRUNE]})
    compress("tiny:llama", [r], tmp_path / "run", opts(text_file, ood_data=str(code)))
    seen = []
    real = ev.evaluate
    monkeypatch.setattr(ev, "evaluate", lambda m, corpus, **kw: seen.append(corpus.name) or real(m, corpus, **kw))
    p = compress("tiny:llama", [r], tmp_path / "run", opts(text_file, ood_data=f"{prose},{code}"))
    assert counting == ["prune"]  # the stage came from the cache
    assert seen == [str(prose), str(prose)]  # the baseline and the pruned variant, on the new corpus only
    (pruned,) = [v.metrics for v in p.variants.values() if not v.is_baseline]
    assert list(pruned.ood) == [str(prose), str(code)]  # the list's order
    assert pruned.ood_perplexity == pruned.ood[str(prose)]["perplexity"]  # now the first corpus's
    assert pruned.ood_quality_drop == max(x["quality_drop"] for x in pruned.ood.values())
    assert json.loads((tmp_path / "run" / "run.json").read_text())["ood_data"] == f"{prose},{code}"
    seen.clear()
    p = compress("tiny:llama", [r], tmp_path / "run", opts(text_file, ood_data=str(code)))  # a corpus dropped
    (pruned,) = [v.metrics for v in p.variants.values() if not v.is_baseline]
    assert seen == [] and list(pruned.ood) == [str(code)]
    assert pruned.ood_quality_drop == pruned.ood[str(code)]["quality_drop"]
    kept = pruned.ood
    p = compress("tiny:llama", [r], tmp_path / "run", opts(text_file, ood_data=None))  # none: nothing new
    (pruned,) = [v.metrics for v in p.variants.values() if not v.is_baseline]
    assert seen == [] and pruned.ood == kept  # and nothing measured is dropped


def test_a_run_measured_with_another_tokenizer_on_the_same_weights_is_refused(tmp_path, text_file):
    """The baseline id hashes the weights only; run.json also records the tokenizer, so a baseline whose
    tokenizer changed (same weights, same id, other tokens) does not resume into mixed figures."""
    from slimlm.errors import ConfigError
    from slimlm.models import load, save

    base = tmp_path / "base"
    save(load("tiny:llama?layers=1"), base)
    r = recipe_from_dict({"name": "r", "stages": [INT8]})
    compress(str(base), [r], tmp_path / "run", opts(text_file))
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert len(info["baseline_tokenizer"]) == 16
    compress(str(base), [r], tmp_path / "run", opts(text_file))  # same tokenizer: resumes
    tok = json.loads((base / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, tok["pre_tokenizer"]]}
    (base / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ConfigError, match="another tokenizer"):
        compress(str(base), [r], tmp_path / "run", opts(text_file))
    assert json.loads((tmp_path / "run" / "run.json").read_text())["baseline_tokenizer"] == info["baseline_tokenizer"]
