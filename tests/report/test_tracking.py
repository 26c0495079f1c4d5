"""MLflow tracking of a run directory: against a recording fake `mlflow`, and against the real one when installed."""

import importlib.machinery
import json
import re
import sys
import types
from collections import namedtuple

import pytest
from _fixture_run import make_run

from slimlm.cli.main import main
from slimlm.report import write_report
from slimlm.report.tracking import TrackingError, track_run

_VALID_KEY = re.compile(r"^[\w.\- ]{1,250}$")


class _Store:
    """What the fake MLflow received, run by run."""

    def __init__(self):
        self.uri, self.experiments, self.runs = None, {}, {}
        self.fail_on = None


def _fake_mlflow(store: _Store) -> tuple[types.ModuleType, types.ModuleType]:
    entities = types.ModuleType("mlflow.entities")
    entities.Metric = namedtuple("Metric", "key value timestamp step")
    entities.Param = namedtuple("Param", "key value")
    entities.RunTag = namedtuple("RunTag", "key value")

    class Client:
        def __init__(self, tracking_uri=None):
            store.uri = tracking_uri

        def _check(self, call):
            if store.fail_on == call:
                raise RuntimeError(f"{call} refused by the store\nsecond line")

        def get_experiment_by_name(self, name):
            eid = store.experiments.get(name, {}).get("id")
            return types.SimpleNamespace(experiment_id=eid) if eid else None

        def create_experiment(self, name, artifact_location=None):
            store.experiments[name] = {"id": str(len(store.experiments) + 1), "artifacts": artifact_location}
            return store.experiments[name]["id"]

        def create_run(self, experiment_id, run_name=None, tags=None):
            rid = f"run{len(store.runs)}"
            store.runs[rid] = {"experiment": experiment_id, "name": run_name, "tags": dict(tags or {}), "params": {},
                               "metrics": {}, "artifacts": [], "dicts": {}, "status": "RUNNING"}
            return types.SimpleNamespace(info=types.SimpleNamespace(run_id=rid))

        def log_batch(self, run_id, metrics=(), params=(), tags=()):
            self._check("log_batch")
            r = store.runs[run_id]
            for m in metrics:
                r["metrics"].setdefault(m.key, []).append((m.step, m.value))
            r["params"].update({p.key: p.value for p in params})
            r["tags"].update({t.key: t.value for t in tags})

        def log_artifact(self, run_id, local_path):
            store.runs[run_id]["artifacts"].append(local_path)

        def log_dict(self, run_id, dictionary, artifact_file):
            store.runs[run_id]["dicts"][artifact_file] = json.loads(json.dumps(dictionary))

        def set_terminated(self, run_id, status="FINISHED"):
            store.runs[run_id]["status"] = status

    mlflow = types.ModuleType("mlflow")
    mlflow.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)  # probed by accelerate's find_spec
    mlflow.MlflowClient = Client
    mlflow.entities = entities
    return mlflow, entities


@pytest.fixture
def store(monkeypatch):
    s = _Store()
    mlflow, entities = _fake_mlflow(s)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    monkeypatch.setitem(sys.modules, "mlflow.entities", entities)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return s


@pytest.fixture
def no_mlflow(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError


def test_one_nested_run_per_variant_with_params_metrics_and_artifacts(store, run_dir):
    rep = write_report(run_dir)
    res = track_run(run_dir, summary=rep)
    parent = store.runs[res["run_id"]]
    children = {rid: r for rid, r in store.runs.items() if rid != res["run_id"]}
    assert len(children) == 10 == len(res["variant_runs"])
    assert all(r["tags"]["mlflow.parentRunId"] == res["run_id"] for r in children.values())
    assert all(r["status"] == "FINISHED" for r in store.runs.values())
    # nothing outside the run directory by default: an SQLite store and artifacts beside the run
    assert res["tracking_uri"] == store.uri == f"sqlite:///{run_dir.resolve() / 'mlflow.db'}"
    assert store.experiments["slimlm"]["artifacts"] == (run_dir.resolve() / "mlartifacts").as_uri()

    assert sorted(p.rsplit("/", 1)[1] for p in parent["artifacts"]) == [
        "decision.md", "report.html", "run.json", "sensitivity.json", "variants.jsonl"]
    assert parent["params"]["model"] == "builtin:smollm2-135m" and parent["params"]["selection.tier"] == "medium"
    assert parent["tags"]["slimlm.selected"] == "f1e2d3c4" and parent["tags"]["slimlm.met"] == "true"
    assert parent["tags"]["machine.cpu"].startswith("AMD EPYC")
    assert parent["tags"]["mlflow.note.content"].startswith("# Decision")
    assert parent["metrics"]["variants"] == [(0, 10.0)]
    assert parent["metrics"]["hypervolume"][0][1] == pytest.approx(rep["hypervolume"])

    chosen = store.runs[res["variant_runs"]["f1e2d3c4"]]
    assert chosen["name"] == "prune ffn=0.25 → distill 400 steps → int8-dynamic"
    assert chosen["tags"]["slimlm.operating_point"] == "true" and chosen["tags"]["slimlm.frontier"] == "true"
    p = chosen["params"]
    assert p["variant_id"] == "f1e2d3c4" and p["is_baseline"] == "false" and p["parent"] == "e8a2b6d4"
    assert p["stages"] == "3" and p["stages.0.config.ffn"] == "0.25" and p["stages.2.config.scheme"] == "int8-dynamic"
    assert p["energy_source"] == "estimated (TDP share)"
    m = {k: v[0][1] for k, v in chosen["metrics"].items() if len(v) == 1}
    assert m["perplexity"] == 39.2 and m["disk_mb"] == 160.3 and m["decode_tokens_per_s"] == 42.0
    assert m["latency_ms.1x128.p50"] == 52.0 and m["latency_ms.8x128.p99"] == pytest.approx(52.0 * 7.4)
    assert m["quality_drop"] == pytest.approx(39.2 / 38.2 - 1) and m["recovery.tokens"] == 409_600
    assert m["roofline.decode_share"] == 0.3 and "accuracy" not in m  # null measurements are left out
    assert chosen["dicts"]["variant.json"]["id"] == "f1e2d3c4"

    base = store.runs[res["variant_runs"]["a0b1c2d3"]]
    assert base["params"]["is_baseline"] == "true" and base["tags"]["slimlm.operating_point"] == "false"
    unprofiled = store.runs[res["variant_runs"]["66aa77bb"]]["metrics"]
    assert "perplexity" in unprofiled and not any(k.startswith("latency") for k in unprofiled)
    curve = store.runs[res["variant_runs"]["e8a2b6d4"]]["metrics"]["curves.distill.eval_perplexity"]
    assert [s for s, _ in curve] == list(range(0, 401, 50)) and curve[-1][1] < curve[0][1]
    for r in store.runs.values():
        assert all(_VALID_KEY.match(k) for k in [*r["params"], *r["metrics"]])
        assert all(len(v) <= 500 for v in r["params"].values())


def test_selection_from_run_json_without_a_report(store, tmp_path):
    d = make_run(tmp_path / "run", with_sensitivity=False)
    res = track_run(d, tracking_uri="http://mlflow.example:5000", experiment="compress")
    parent = store.runs[res["run_id"]]
    assert store.uri == "http://mlflow.example:5000" and store.experiments["compress"]["artifacts"] is None
    assert parent["tags"]["slimlm.selected"] == "f1e2d3c4"  # what write_report selects from run.json
    assert "slimlm.frontier" not in store.runs[res["variant_runs"]["f1e2d3c4"]]["tags"]
    assert sorted(p.rsplit("/", 1)[1] for p in parent["artifacts"]) == ["run.json", "variants.jsonl"]
    again = track_run(d, tracking_uri="http://mlflow.example:5000", experiment="compress")
    assert again["run_id"] != res["run_id"] and again["experiment_id"] == res["experiment_id"]


def test_unmeasured_variants_are_skipped(store, tmp_path):
    from _fixture_run import variants

    vs = variants()[:3]
    vs[2]["metrics"] = {}
    res = track_run(make_run(tmp_path / "run", vs=vs))
    assert list(res["variant_runs"]) == ["a0b1c2d3", "5e21a9f0"]


def test_store_failure_is_one_line_and_marks_the_run_failed(store, run_dir):
    store.fail_on = "log_batch"
    with pytest.raises(TrackingError) as exc:
        track_run(run_dir)
    msg = str(exc.value)
    assert "\n" not in msg and "log_batch refused by the store" in msg and "--track mlflow" in msg
    assert [r["status"] for r in store.runs.values()] == ["FAILED"]


def test_missing_mlflow_is_a_one_line_error(no_mlflow, run_dir):
    with pytest.raises(TrackingError, match=r"pip install 'slimlm\[track\]'"):
        track_run(run_dir)


@pytest.mark.parametrize("command", ["compress", "search", "report"])
def test_cli_without_mlflow_exits_2_before_any_work(no_mlflow, monkeypatch, capsys, tmp_path, run_dir, command):
    def must_not_run(*a, **k):
        raise AssertionError("heavy work started before the tracking check")

    monkeypatch.setattr("slimlm.recipes.pipeline.compress", must_not_run)
    monkeypatch.setattr("slimlm.search.search", must_not_run)
    monkeypatch.setattr("slimlm.report.write_report", must_not_run)
    args = [str(run_dir)] if command == "report" else ["tiny:llama", "--out", str(tmp_path / "o")]
    code = main([command, *args, "--track", "mlflow"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "pip install 'slimlm[track]'" in err and len(err.splitlines()) <= 2  # rich may wrap
    assert not (tmp_path / "o").exists() and not (run_dir / "report.html").exists()


def test_cli_tracking_options_are_checked(store, capsys, run_dir):
    assert main(["report", str(run_dir), "--tracking-uri", "http://x"]) == 2
    assert "--tracking-uri needs --track mlflow" in capsys.readouterr().err
    assert main(["report", str(run_dir), "--track", "wandb"]) == 2
    assert "use one of: mlflow" in capsys.readouterr().err
    assert not store.runs


def test_cli_report_json_gains_tracking(store, capsys, run_dir):
    code = main(["report", str(run_dir), "--track", "mlflow", "--tracking-uri", "http://x:5000", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["selected"] == "f1e2d3c4"
    t = data["tracking"]
    assert t["backend"] == "mlflow" and t["tracking_uri"] == "http://x:5000" and t["run_id"] in store.runs
    assert len(t["variant_runs"]) == 10
    assert main(["report", str(run_dir), "--json"]) == 0
    assert "tracking" not in json.loads(capsys.readouterr().out)


def test_cli_compress_tracks_at_the_end(store, capsys, tmp_path, text_file):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: tiny\nstages:\n  - quantize: {scheme: int8-weight}\n")
    out = tmp_path / "run"
    code = main(["compress", "tiny:llama", "--recipe", str(recipe), "--data", str(text_file), "--ood-data", "none",
                 "--out", str(out), "--eval-tokens", "128", "--seq-len", "32", "--no-profile", "--track", "mlflow",
                 "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["tracking"]["tracking_uri"] == f"sqlite:///{out.resolve() / 'mlflow.db'}"
    assert set(data["tracking"]["variant_runs"]) == {v["id"] for v in data["variants"]}
    parent = store.runs[data["tracking"]["run_id"]]
    assert any(p.endswith("report.html") for p in parent["artifacts"])  # logged after the report was written


def test_real_mlflow_round_trip(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    d = make_run(tmp_path / "run")
    rep = write_report(d)
    res = track_run(d, summary=rep)  # the default store: sqlite in the run directory
    monkeypatch.setenv("MLFLOW_TRACKING_URI", res["tracking_uri"])
    runs = mlflow.search_runs(experiment_names=["slimlm"], output_format="list")
    assert len(runs) == 11
    by_id = {r.info.run_id: r for r in runs}
    chosen = by_id[res["variant_runs"]["f1e2d3c4"]].data
    assert chosen.tags["mlflow.parentRunId"] == res["run_id"] and chosen.tags["slimlm.operating_point"] == "true"
    assert chosen.metrics["latency_ms.1x128.p50"] == 52.0 and chosen.params["stages.2.config.scheme"] == "int8-dynamic"
    client = mlflow.MlflowClient(res["tracking_uri"])
    names = {a.path for a in client.list_artifacts(res["run_id"])}
    assert {"report.html", "decision.md", "variants.jsonl"} <= names
    assert (d / "mlartifacts" / res["run_id"] / "artifacts" / "report.html").is_file()
    history = client.get_metric_history(res["variant_runs"]["e8a2b6d4"], "curves.distill.eval_perplexity")
    assert [m.step for m in history] == list(range(0, 401, 50))
