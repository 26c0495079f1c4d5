"""`slimlm quantize` in-process: JSON keys, a reloadable variant, and one clear line for bad options."""

import json

import torch

from slimlm.cli.main import main
from slimlm.models import load

TINY = "tiny:llama?layers=2&hidden=64&heads=4&kv_heads=2&ffn=128&seed=0"


def run(capsys, *args):
    code = main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_quantize_json_and_reload(capsys, tmp_path, text_file):
    out_dir = tmp_path / "q"
    code, out, _ = run(capsys, "quantize", TINY, "--scheme", "int4-weight", "--group-size", "16", "--data",
                       str(text_file), "--calib-rows", "8", "--calib-len", "64", "--out", str(out_dir), "--json")
    assert code == 0
    data = json.loads(out)
    assert {"out", "params_before", "params_after", "seconds", "scheme", "quantized", "fp32_layers"} <= data.keys()
    assert data["params_after"] == data["params_before"] and data["quantized"] == 14
    m = load(out_dir)
    assert m.provenance["stages"][-1]["config"]["method"] == "gptq"
    with torch.inference_mode():
        assert torch.isfinite(m.hf(torch.randint(0, 250, (1, 16))).logits).all()


def test_invalid_group_size_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "quantize", TINY, "--scheme", "int4-weight", "--group-size", "24", "--method", "rtn",
                       "--out", str(tmp_path / "q"))
    assert code == 2
    assert "valid group sizes for this model: 2, 4, 8, 16, 32, 64" in err and "Traceback" not in err


def test_int4pack_warns_about_layers_it_leaves_on_dequant_and_refuses_a_group_it_cannot_take(capsys, tmp_path):
    code, out, err = run(capsys, "quantize", TINY, "--scheme", "int4-weight", "--kernel", "int4pack", "--skip",
                         "embed", "--method", "rtn", "--out", str(tmp_path / "q"), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["dequant_layers"] == ["lm_head"]  # 260 tokens: not a multiple of 16
    assert data["warnings"] == ["1 layer(s) keep the dequant kernel: int4pack needs output widths divisible by 16 "
                                "(lm_head has 260)"]
    assert err.count("keep the dequant kernel") == 1
    code, _, err = run(capsys, "quantize", TINY, "--scheme", "int4-weight", "--kernel", "int4pack", "--group-size",
                       "16", "--method", "rtn", "--out", str(tmp_path / "q16"))
    assert code == 2 and "int4pack kernel takes group sizes 32, 64, 128, 256, not 16" in err
    assert "Traceback" not in err and not (tmp_path / "q16").exists()


def test_gptq_without_data_says_how_to_fix(capsys, tmp_path):
    code, _, err = run(capsys, "quantize", TINY, "--scheme", "int4-weight", "--group-size", "16", "--out",
                       str(tmp_path / "q"))
    assert code == 2 and "--data" in err


def test_unknown_scheme(capsys, tmp_path):
    code, _, err = run(capsys, "quantize", TINY, "--scheme", "int3", "--out", str(tmp_path / "q"))
    assert code == 2 and "scheme" in err


def test_qat_checkpoints_beside_the_output_and_resumes(capsys, tmp_path, text_file):
    out_dir = tmp_path / "q"
    ckpt = tmp_path / "q.checkpoint"
    args = ["quantize", TINY, "--scheme", "int4-weight", "--group-size", "16", "--method", "rtn", "--data",
            str(text_file), "--calib-rows", "8", "--calib-len", "64", "--qat-steps", "4", "--checkpoint-every", "1",
            "--out", str(out_dir), "--json"]
    ckpt.mkdir()
    (ckpt / "notes.txt").write_text("mine")
    code, _, err = run(capsys, *args)  # a folder slimlm did not write is left alone
    assert code == 2 and "did not write" in err and (ckpt / "notes.txt").read_text() == "mine"
    (ckpt / "notes.txt").unlink()
    ckpt.rmdir()
    code, out, _ = run(capsys, *args)
    assert code == 0 and json.loads(out)["qat"]["trained"] and not ckpt.exists()  # removed once saved
    code, _, err = run(capsys, "quantize", TINY, "--scheme", "int8-weight", "--checkpoint-every", "2", "--out",
                       str(tmp_path / "p"))
    assert code == 2 and "is for QAT" in err


def test_qat_with_gradient_checkpointing_from_the_command_line(capsys, tmp_path, text_file):
    code, out, _ = run(capsys, "quantize", TINY, "--scheme", "int4-weight", "--group-size", "16", "--method", "rtn",
                       "--data", str(text_file), "--calib-rows", "8", "--calib-len", "64", "--qat-steps", "2",
                       "--gradient-checkpointing", "--out", str(tmp_path / "q"), "--json")
    assert code == 0 and json.loads(out)["qat"]["trained"]
    config = json.loads((tmp_path / "q" / "slimlm.json").read_text())
    assert "gradient_checkpointing" in json.dumps(config)
    code, _, err = run(capsys, "quantize", TINY, "--scheme", "int8-weight", "--gradient-checkpointing", "--out",
                       str(tmp_path / "p"))
    assert code == 2 and "--gradient-checkpointing is for QAT" in err


def test_qat_max_minutes_stops_resumes_and_survives_a_kill_after_saving(capsys, tmp_path, text_file):
    import shutil

    out_dir, ckpt = tmp_path / "q", tmp_path / "q.checkpoint"
    args = ["quantize", TINY, "--scheme", "int4-weight", "--group-size", "16", "--method", "rtn", "--data",
            str(text_file), "--calib-rows", "8", "--calib-len", "64", "--qat-steps", "3", "--out", str(out_dir),
            "--json"]
    code, out, _ = run(capsys, *args, "--max-minutes", "1e-9")
    res = json.loads(out)
    assert code == 0 and res["finished"] is False and res["out_of_time"] == 1 and res["checkpoint"] == str(ckpt)
    assert not out_dir.exists() and (ckpt / "meta.json").exists()  # no half-trained variant
    code, _, err = run(capsys, *args)  # starting over would lose the checkpoint
    assert code == 2 and "--resume" in err
    shutil.copytree(ckpt, tmp_path / "saved-checkpoint")
    code, out, _ = run(capsys, *args, "--resume")
    res = json.loads(out)
    assert code == 0 and res["qat"]["resumed_from"] == 1 and res["qat"]["trained"] and not ckpt.exists()
    weights = {p.name: p.read_bytes() for p in out_dir.glob("*.safetensors")}
    shutil.copytree(tmp_path / "saved-checkpoint", ckpt)  # as if killed after the save, before the removal
    code, out, _ = run(capsys, *args, "--resume")
    res = json.loads(out)
    assert code == 0 and res["already_finished"] is True and not ckpt.exists()
    assert weights and {p.name: p.read_bytes() for p in out_dir.glob("*.safetensors")} == weights
    shutil.copytree(tmp_path / "saved-checkpoint", ckpt)
    code, _, err = run(capsys, *[a if a != "3" else "4" for a in args], "--resume")  # another run's variant
    assert code == 2 and "--force" in err and ckpt.exists()


def test_max_minutes_is_for_qat(capsys, tmp_path):
    code, _, err = run(capsys, "quantize", TINY, "--scheme", "int8-weight", "--max-minutes", "5", "--out",
                       str(tmp_path / "p"))
    assert code == 2 and "PTQ does not train" in err and err.count("\n") == 1
