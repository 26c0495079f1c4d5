"""The CLI run in-process: JSON keys, and one clear line with exit code 2 for each bad input."""

import json

import pytest

from slimlm.cli.main import main
from slimlm.models import load, save


def run(capsys, *args):
    code = main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_evaluate_json_keys(capsys, text_file):
    code, out, _ = run(capsys, "evaluate", "tiny:llama", "--data", str(text_file), "--seq-len", "64",
                       "--max-tokens", "256", "--teacher", "tiny:llama?seed=1", "--json")
    assert code == 0
    data = json.loads(out)
    assert {"model", "data", "perplexity", "tokens", "seq_len", "ece", "teacher_agreement"} <= data.keys()
    assert data["tokens"] == 256 - 4 and data["seq_len"] == 64  # 4 windows of 64 predict 63 tokens each


def test_evaluate_table(capsys, text_file):
    code, out, _ = run(capsys, "evaluate", "tiny:llama", "--data", str(text_file), "--max-tokens", "128",
                       "--seq-len", "64")
    assert code == 0 and "perplexity" in out


def test_profile_two_models_json(capsys):
    code, out, _ = run(capsys, "profile", "tiny:llama", "tiny:llama?layers=2", "--shapes", "1x16",
                       "--decode-tokens", "4", "--repeats", "2", "--json")
    assert code == 0
    data = json.loads(out)
    assert isinstance(data, list) and len(data) == 2
    assert {"params", "nonzero_params", "disk_mb", "peak_rss_mb", "latency_ms", "decode_tokens_per_s",
            "energy_j_per_1k_tokens", "roofline", "machine"} <= data[1].keys()
    assert data[1]["ratios"]["params"] < 1


def _bad_inputs(tmp_path, text_file):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    arch = tmp_path / "gpt2"
    arch.mkdir()
    (arch / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    trunc = tmp_path / "trunc"
    save(load("tiny:llama"), trunc)
    w = trunc / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    return [
        (["evaluate", str(tmp_path / "missing")], "does not exist"),
        (["evaluate", str(arch), "--data", str(text_file)], "architecture 'gpt2' is not supported"),
        (["evaluate", str(trunc), "--data", str(text_file)], "truncated"),
        (["evaluate", "tiny:llama", "--data", str(empty)], "is empty"),
        (["evaluate", "tiny:llama?max_pos=64", "--data", str(text_file), "--seq-len", "512"], "exceeds the model's maximum"),
        (["profile", "tiny:llama", "--shapes", "1xZ"], "--shapes"),
    ]


@pytest.mark.parametrize("case", range(6))
def test_bad_input_prints_one_line_and_exits_2(capsys, tmp_path, text_file, case):
    args, message = _bad_inputs(tmp_path, text_file)[case]
    code, out, err = run(capsys, *args)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in " ".join(err.split())
    assert "Traceback" not in err


def test_debug_shows_traceback(tmp_path):
    from slimlm.errors import SpecError

    with pytest.raises(SpecError):
        main(["evaluate", str(tmp_path / "missing"), "--debug"])


def _commands():
    import typer

    from slimlm.cli.main import _register, app

    _register()
    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # recipes: a group of its own
            yield from ((f"{name} {sub}", sc) for sub, sc in cmd.commands.items())
        else:
            yield name, cmd


def test_help_at_80_columns_names_every_option_in_full(capsys, monkeypatch):
    """Piped help is 80 columns wide; every option's full name (and every argument's metavar) must be in it."""
    monkeypatch.setenv("COLUMNS", "80")
    seen = 0
    for name, cmd in _commands():
        code, out, err = run(capsys, *name.split(), "--help")
        assert code == 0, (name, err)
        assert "…" not in out, name
        assert max(map(len, out.splitlines())) <= 80, name
        for param in cmd.params:
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("--"):
                    assert opt in out, (name, opt)
                    seen += 1
            if param.param_type_name == "argument":
                assert param.metavar and param.metavar.isupper() and param.metavar in out, (name, param.name)
    assert seen > 200  # the loop reached every command's options


def test_evaluate_runs_on_the_device_asked_for_and_refuses_one_it_does_not_have(capsys, text_file):
    import torch

    args = ["evaluate", "tiny:llama", "--data", str(text_file), "--max-tokens", "128", "--seq-len", "64", "--json"]
    code, out, _ = run(capsys, *args, "--device", "cpu")
    assert code == 0 and json.loads(out)["device"] == "cpu"
    if not torch.cuda.is_available():
        code, _, err = run(capsys, *args, "--device", "cuda:0")
        assert code == 2 and "no CUDA GPU" in err and err.count("error:") == 1
    code, _, err = run(capsys, *args, "--device", "tpu9")
    assert code == 2 and "tpu9" in err


def test_evaluate_keeps_a_slimlm_quantized_variant_on_the_cpu(capsys, text_file, tmp_path, monkeypatch):
    import torch

    from slimlm import _device

    assert run(capsys, "quantize", "tiny:llama", "--scheme", "int8-weight", "--out", str(tmp_path / "q"),
               "--json")[0] == 0
    monkeypatch.setattr(_device, "pick_device", lambda device: torch.device("meta"))  # any device but the CPU
    code, _, err = run(capsys, "evaluate", str(tmp_path / "q"), "--data", str(text_file), "--max-tokens", "128",
                       "--device", "cuda:0")
    assert code == 2 and "slimlm-quantized" in err and "--device cpu" in err


def test_demo_evaluates_in_domain_and_on_every_default_out_of_domain_corpus(capsys):
    from slimlm.recipes.pipeline import RunOptions

    assert main(["demo", "--model", "tiny:llama", "--max-tokens", "64", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res["evaluate"]) == ["shakespeare", *RunOptions().ood_data.split(",")]
    assert all(q["perplexity"] > 1 and q["tokens"] > 0 for q in res["evaluate"].values())
    assert res["profile"]["params"] > 0
