"""The Optuna study over a tiny model: budget exactness with two workers on one SQLite file, space errors."""

import dataclasses
import subprocess
import sys
import textwrap

import pytest

from slimlm.errors import ConfigError
from slimlm.recipes.pipeline import RunOptions
from slimlm.search import load_space, parse_duration, search, space_from_dict

SPACE = {"name": "t", "choices": {"quantize": ["none", "int8-dynamic", "int8-weight"], "layers": [0, 1]},
         "fixed": {"calibration": {"samples": 4, "seq_len": 32}}}


def _opts(data):
    return RunOptions(data=str(data), ood_data=None, eval_tokens=64, seq_len=32, shapes=((1, 8),),
                      decode_tokens=0, repeats=1, profile=False, teacher_agreement=False)


def test_space_builds_recipes_and_baseline():
    sp = space_from_dict(SPACE, "t")
    assert sp.build({"layers": 0, "quantize": "none"}) is None  # nothing to do: the baseline
    r = sp.build({"layers": 1, "quantize": "int8-dynamic"})
    assert [s.kind for s in r.stages] == ["prune", "quantize"]
    b = space_from_dict({"choices": {"unstructured": ["wanda:0.5", "sparsegpt:2:4"], "quantize": ["int4-weight"],
                                     "group_size": [64]}}, "u")
    r = b.build({"unstructured": "sparsegpt:2:4", "quantize": "int4-weight", "group_size": 64})
    assert r.stages[0].config.method == "sparsegpt" and r.stages[1].config.group_size == 64
    assert load_space("builtin").choices["quantize"]


@pytest.mark.parametrize("bad,msg", [
    ({"choices": {"layrs": [1]}}, "unknown choice"),
    ({"choices": {"quantize": ["int5"]}}, "quantize"),
    ({"choices": {"layers": []}}, "non-empty list"),
    ({"nope": 1}, "choices"),
])
def test_bad_spaces_fail_clearly(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        space_from_dict(bad, "s.yaml")


def test_durations():
    assert parse_duration("30m") == 1800 and parse_duration("90s") == 90 and parse_duration("2h") == 7200
    with pytest.raises(ConfigError, match="duration"):
        parse_duration("soon")


def test_search_runs_exactly_n_trials_and_resumes(tmp_path, text_file):
    sp = space_from_dict(SPACE, "t")
    res = search("tiny:llama", sp, tmp_path / "run", trials=2, objectives=("size",), options=_opts(text_file))
    assert res["completed"] == 2 and res["ran_here"] == 2
    assert all(len(t["values"]) == 2 for t in res["trials"])
    again = search("tiny:llama", sp, tmp_path / "run", trials=3, objectives=("size",), options=_opts(text_file))
    assert again["completed"] == 3 and again["ran_here"] == 1  # the study resumed: one more trial only
    lines = (tmp_path / "run" / "variants.jsonl").read_text().splitlines()
    assert 1 <= len(lines) <= 4 and all('"metrics": {}' not in x for x in lines)


def test_two_workers_share_one_sqlite_study(tmp_path, text_file):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from slimlm.recipes.pipeline import RunOptions
        from slimlm.search import search, space_from_dict
        opts = RunOptions(data={str(text_file)!r}, ood_data=None, eval_tokens=64, seq_len=32, shapes=((1, 8),),
                          decode_tokens=0, repeats=1, profile=False, teacher_agreement=False)
        res = search("tiny:llama", space_from_dict({SPACE!r}, "t"), {str(tmp_path / "run")!r}, trials=4,
                     objectives=("size",), options=opts, seed=int(sys.argv[1]))
        print("RAN", res["ran_here"])
    """))
    procs = [subprocess.Popen([sys.executable, str(script), str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    ran = [int(o[0].split("RAN")[-1]) for o in outs]
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name="slimlm", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4 and sum(ran) == 4  # no trial lost, none run twice
    assert len({t.number for t in complete}) == 4
    assert all(t.user_attrs.get("variant") for t in complete)


def test_systematic_trial_failures_stop_the_worker(tmp_path, text_file, monkeypatch):
    from slimlm.recipes import pipeline

    def broken(self, recipe, record_intermediate=True, on_metrics=None):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pipeline.Pipeline, "run_recipe", broken)
    sp = space_from_dict({"choices": {"quantize": ["int8-dynamic", "int8-weight"]}}, "t")
    with pytest.raises(ConfigError, match="disk on fire"):
        search("tiny:llama", sp, tmp_path / "run", trials=2, objectives=("size",), options=_opts(text_file))


def test_a_repeated_pick_reuses_its_measurement(tmp_path, text_file, monkeypatch):
    import slimlm.recipes.pipeline as pipeline

    profiled: list = []
    real = pipeline.Pipeline.profile_all
    monkeypatch.setattr(pipeline.Pipeline, "profile_all",
                        lambda self, ids=None: (profiled.append(ids), real(self, ids))[1])
    sp = space_from_dict({"name": "one", "choices": {"quantize": ["int8-dynamic"]}}, "one")  # one point only
    opts = dataclasses.replace(_opts(text_file), profile=True)
    logs: list[str] = []
    res = search("tiny:llama", sp, tmp_path / "run", trials=2, objectives=("size",), options=opts,
                 log=logs.append)
    assert res["completed"] == 2
    assert res["trials"][0]["values"] == res["trials"][1]["values"]
    # trial 0 profiles the variant, trial 1 reuses it, the end re-profiles the frontier side by side once
    assert len(profiled) == 2
    assert any("measurements are reused" in m for m in logs)


def test_siblings_of_a_trial_reuse_its_stages(tmp_path, text_file):
    # the first pick prunes (layers=1 comes first), so its quantization siblings have a stage to reuse
    sp = space_from_dict({**SPACE, "choices": {"quantize": ["none", "int8-dynamic", "int8-weight"],
                                               "layers": [1, 0]}}, "t")
    logs: list[str] = []
    res = search("tiny:llama", sp, tmp_path / "run", trials=3, objectives=("size",), options=_opts(text_file),
                 log=logs.append)
    picks = [t["params"] for t in res["trials"]]
    assert picks[0] == {"quantize": "none", "layers": 1}  # a new study starts at every key's first value
    # trials 1 and 2 are trial 0's quantization siblings: same prune, the other two schemes
    assert len({p["layers"] for p in picks}) == 1
    assert sorted(p["quantize"] for p in picks) == sorted(SPACE["choices"]["quantize"])
    prune_runs = [m for m in logs if "stage 1/" in m and "prune" in m]
    assert sum("running" in m for m in prune_runs) == 1  # the shared prune stage ran once...
    assert sum("cached" in m for m in prune_runs) == 2  # ...and both siblings took it from the cache
    import optuna

    st = optuna.load_study(study_name="slimlm", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert [t.user_attrs.get("sibling_of") for t in st.trials if t.number in (1, 2)] == [0, 0]


def test_expand_off_queues_nothing(tmp_path, text_file):
    import optuna

    sp = space_from_dict(SPACE, "t")
    res = search("tiny:llama", sp, tmp_path / "run", trials=2, objectives=("size",), options=_opts(text_file),
                 expand=())
    assert res["completed"] == 2
    st = optuna.load_study(study_name="slimlm", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert all("sibling_of" not in t.user_attrs for t in st.trials)
    assert not [t for t in st.trials if t.state == optuna.trial.TrialState.WAITING]


def test_quantize_skip_choice_reaches_the_stage_and_its_label():
    sp = space_from_dict({"choices": {"quantize": ["int8-dynamic"], "quantize_skip": ["lm_head,embed", "none"]}}, "q")
    default = sp.build({"quantize": "int8-dynamic", "quantize_skip": "lm_head,embed"}).stages[0]
    everything = sp.build({"quantize": "int8-dynamic", "quantize_skip": "none"}).stages[0]
    assert default.config.skip == ("lm_head", "embed") and everything.config.skip == ()
    assert default.label() == "int8-dynamic" and everything.label() == "int8-dynamic +lm_head+embed"
    assert default.key() != everything.key()  # separate cache entries


PRUNE_SPACE = {"name": "mf", "choices": {"layers": [1, 2], "distill_steps": [3]},
               "fixed": {"calibration": {"samples": 4, "seq_len": 32},
                         "distill": {"eval_every": 1, "eval_tokens": 64, "seq_len": 32, "batch_size": 2}},
               "pruner": {"name": "median", "startup_trials": 1, "min_trials": 1}}


def test_a_hopeless_distillation_is_pruned_and_the_budget_stays_exact(tmp_path, text_file, monkeypatch):
    """Multi-fidelity: the distillation's eval curve reaches the study; a trial worse than the median at a step
    stops there (PRUNED, its half-trained stage not cached), and the study still completes its budget."""
    import optuna
    from optuna.trial import TrialState

    from slimlm.distill import trainer

    # the eval is made a known function of the student (fewer layers: worse), so which trial is hopeless is
    # certain; everything else (pipeline, trainer, study, pruner) runs for real
    monkeypatch.setattr(trainer, "_eval_score", lambda student, corpus, cfg, task: (
        lambda ppl: {"perplexity": ppl, "score": ppl})(100.0 / student.adapter.num_layers))
    sp = space_from_dict(PRUNE_SPACE, "mf")
    logs: list[str] = []
    res = search("tiny:llama", sp, tmp_path / "run", trials=2, objectives=("size",), options=_opts(text_file),
                 log=logs.append)  # a new study starts at the first values: layers=1, then draws layers=2
    assert res["completed"] == 2
    study = optuna.load_study(study_name="slimlm", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 2 and len(pruned) >= 1 and res["pruned"] == len(pruned)
    assert all(t.params["layers"] == 2 for t in pruned) and all(t.params["layers"] == 1 for t in complete)
    assert pruned[0].user_attrs["curve"] == {"1": 50.0}  # stopped after its first evaluation of 3
    assert complete[0].user_attrs["curve"] == {"1": 100 / 3, "2": 100 / 3, "3": 100 / 3}  # the full curve
    assert any("pruned at distillation step 1" in m for m in logs)
    # the half-trained stage is not in the cache: only the layers=1 distillation (and both prune stages) are
    run_text = (tmp_path / "run" / "variants.jsonl").read_text()
    assert '"layers": 2' not in run_text
    metas = [p.read_text() for p in (tmp_path / "run" / "cache").glob("*/slimlm.json")]
    assert sum('"distill"' in m for m in metas) == 1


def test_pruner_settings_in_the_space():
    assert space_from_dict({"choices": {"layers": [1]}}, "s").pruner.name == "median"
    assert space_from_dict({"choices": {"layers": [1]}, "pruner": "none"}, "s").pruner.make() is None
    with pytest.raises(ConfigError, match="pruner 'hyperband' is unknown"):
        space_from_dict({"choices": {"layers": [1]}, "pruner": "hyperband"}, "s.yaml")
    with pytest.raises(ConfigError, match="unknown pruner field"):
        space_from_dict({"choices": {"layers": [1]}, "pruner": {"name": "median", "patience": 3}}, "s.yaml")
