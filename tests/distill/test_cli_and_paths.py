"""The CLI in-process (distill, finetune, iterative schedule), the layer map, and the classification path."""

import json

import pytest
import torch

from slimlm.cli.main import main
from slimlm.data import load_data
from slimlm.distill import DistillConfig, distill_run
from slimlm.distill.finetune import finetune
from slimlm.distill.layer_map import derive_layer_map, kept_layers_from_provenance
from slimlm.distill.schedules import parse_schedule, progressive, split_steps, structured_steps
from slimlm.errors import ConfigError
from slimlm.evaluate import evaluate
from slimlm.models import load
from slimlm.testing.students import drop_layers, small_corpus

TEACHER = "tiny:llama?layers=4&hidden=32&heads=2&kv_heads=1&ffn=64&seed=0"


def run_json(capsys, *argv) -> dict:
    capsys.readouterr()
    code = main(list(argv) + ["--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def test_layer_map_from_provenance_and_uniform():
    prov = {"stages": [{"kind": "prune", "report": {"layers": {"removed": [1, 4]}, "shape_before": {"layers": 6}}},
                       {"kind": "prune", "kept_layers": [0, 2, 3]}]}
    assert kept_layers_from_provenance(prov) == [0, 3, 5]  # the second prune indexes the first's survivors
    assert derive_layer_map(3, 6, prov) == [(0, 0), (1, 3), (2, 5)]
    assert derive_layer_map(2, 6, {}) == [(0, 2), (1, 5)]  # uniform, last to last


def test_layer_map_from_a_saved_prune_report(tmp_path):
    from slimlm.distill.layer_map import model_provenance
    from slimlm.models import save

    t = load(TEACHER)
    s = drop_layers(t, [0, 2])
    s.provenance["stages"] = []  # as `slimlm prune` saves it: the layers live in the top-level report
    save(s, tmp_path / "p", stage={"kind": "prune", "config": {}},
         extra={"prune": {"layers": {"removed": [1, 3]}, "shape_before": {"layers": 4}}})
    loaded = load(tmp_path / "p")
    assert derive_layer_map(2, 4, model_provenance(loaded)) == [(0, 0), (1, 2)]


def test_schedule_parsing_and_structured_ramp():
    from slimlm.prune import StructuredConfig

    assert parse_schedule(None) is None and parse_schedule("iterative:steps=3").steps == 3
    with pytest.raises(ConfigError, match="steps=N"):
        parse_schedule("iterative:step=3")
    assert split_steps(10, 3) == [4, 3, 3]
    steps = structured_steps(StructuredConfig(layers=10, ffn=0.35), 30, 3)
    assert sum(s.layers or 0 for s in steps if s) == 10
    kept = 1.0
    for s in steps:
        if s and s.ffn:
            kept *= 1 - s.ffn
    assert kept == pytest.approx(0.65)
    assert steps[0].layers > steps[1].layers  # cubic ramp: large cuts first


def test_cli_distill_saves_student_with_provenance(tmp_path, capsys):
    res = run_json(capsys, "distill", "tiny:llama?layers=2&hidden=32&heads=2&kv_heads=1&ffn=64&seed=1",
                   "--teacher", TEACHER, "--data", str(_small_file(tmp_path)), "--out", str(tmp_path / "s"),
                   "--steps", "4", "--seq-len", "32", "--batch-size", "2", "--eval-every", "2",
                   "--eval-tokens", "256", "--checkpoint-every", "2")
    assert {"out", "params_before", "params_after", "seconds", "steps", "tokens", "final_losses", "eval_curve",
            "eval"} <= set(res)
    assert res["steps"] == 4 and res["tokens"] == 4 * 2 * 32 and len(res["eval_curve"]) == 2
    meta = json.loads((tmp_path / "s" / "slimlm.json").read_text())
    assert meta["stages"][-1]["kind"] == "distill" and meta["stages"][-1]["config"]["steps"] == 4
    assert not (tmp_path / "s.checkpoint").exists()  # removed once the run finished
    reloaded = load(tmp_path / "s")
    assert reloaded.hash == meta["hash"]


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    code = main(["distill", TEACHER, "--out", str(tmp_path / "x"), "--steps", "2", "--temperature", "0"])
    assert code == 2 and "--temperature" in capsys.readouterr().err
    code = main(["distill", TEACHER, "--out", str(tmp_path / "x"), "--steps", "2"])
    assert code == 2 and "--teacher" in capsys.readouterr().err
    code = main(["distill", TEACHER, "--teacher", TEACHER, "--out", str(tmp_path / "x"), "--steps", "2",
                 "--eval-tokens", "16", "--json"])
    err = capsys.readouterr().err
    assert code == 2 and "--eval-tokens 16 leaves" in err and "distill:" not in err  # refused before training
    assert not (tmp_path / "x").exists()


def test_cli_iterative_schedule_reaches_target(tmp_path, capsys):
    teacher = "tiny:llama?layers=6&hidden=32&heads=2&kv_heads=1&ffn=64&seed=0"
    res = run_json(capsys, "distill", teacher, "--teacher", teacher, "--data", str(_small_file(tmp_path)),
                   "--out", str(tmp_path / "it"), "--steps", "6", "--seq-len", "32", "--batch-size", "2",
                   "--schedule", "iterative:steps=3", "--prune", "layers=3,ffn=0.5", "--eval-tokens", "256")
    m = load(tmp_path / "it")
    assert m.adapter.num_layers == 3 and m.adapter.intermediate_size == 32
    assert res["params_after"] < res["params_before"] and res["steps"] == 6 and len(res["cycles"]) == 3


def test_classification_finetune_then_distill(tmp_path):
    corpus = small_corpus(chars=100_000, plays=400, base=load_data("shakespeare-genre"))
    teacher = load("tiny:bert?labels=6&layers=2&hidden=32&heads=2&ffn=64")
    before = evaluate(teacher, corpus, seq_len=64, max_examples=128, split="train")["accuracy"]
    ft = finetune(teacher, corpus, DistillConfig(loss="ce", alpha=1.0, steps=30, lr=3e-3, batch_size=16,
                                                 seq_len=64))
    after = evaluate(teacher, corpus, seq_len=64, max_examples=128, split="train")
    assert ft.final_losses["ce"] < ft.history[0]["ce"]
    assert after["accuracy"] > before
    student = load("tiny:bert?labels=6&layers=1&hidden=32&heads=2&ffn=64&seed=1")  # a fresh, shallower student
    ag0 = evaluate(student, corpus, seq_len=64, max_examples=128, teacher=teacher)["teacher_agreement"]
    distill_run(student, teacher, corpus, DistillConfig(loss="kl", alpha=0.5, temperature=2.0, steps=15, lr=3e-3,
                                                        batch_size=16, seq_len=64, hidden_weight=0.5))
    ev = evaluate(student, corpus, seq_len=64, max_examples=128, teacher=teacher)
    assert ev["teacher_agreement"]["kl"] < 0.5 * ag0["kl"]
    assert ev["teacher_agreement"]["top1"] > ag0["top1"]  # the student now predicts what the teacher predicts


def test_progressive_distillation_chains_students():
    corpus = small_corpus()
    t = load(TEACHER)
    mid, final = drop_layers(t, [0, 2, 3]), load("tiny:llama?layers=1&hidden=32&heads=2&kv_heads=1&ffn=64&seed=2")
    w0 = final.hf.model.layers[0].mlp.up_proj.weight.clone()
    res = progressive(t, [mid, final], corpus, DistillConfig(steps=2, seq_len=32))
    assert len(res) == 2 and not torch.equal(w0, final.hf.model.layers[0].mlp.up_proj.weight)


def _small_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(small_corpus(chars=8000, plays=2).splits["train"][0].text)
    return path


def test_cli_finetune_then_distill_a_classifier(tmp_path, capsys):
    rows = [{"text": f"{w} " * 5, "label": w, "split": s} for s in ("train", "eval") for w in ("thee", "code") * 8]
    data = tmp_path / "labelled.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    res = run_json(capsys, "finetune", "tiny:bert?layers=1&hidden=32&heads=2&ffn=64", "--data", str(data),
                   "--out", str(tmp_path / "t"), "--steps", "15", "--lr", "1e-2", "--warmup", "1",
                   "--batch-size", "8", "--seq-len", "16")
    assert res["eval"]["accuracy"] == 1.0 and res["params_after"] == res["params_before"]
    res = run_json(capsys, "distill", "tiny:bert?layers=1&hidden=32&heads=2&ffn=64&seed=3", "--teacher",
                   str(tmp_path / "t"), "--data", str(data), "--out", str(tmp_path / "s"), "--steps", "15",
                   "--lr", "1e-2", "--alpha", "0.5", "--temperature", "2", "--batch-size", "8", "--seq-len", "16")
    assert res["eval"]["accuracy"] == 1.0 and {"accuracy", "f1"} <= set(res["eval"])
