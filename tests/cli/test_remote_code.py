"""Code shipped in a model directory runs only with --trust-remote-code: refused by default on every command
that loads a model, and imported by transformers when the user opts in."""

import json

import pytest

from slimlm.cli.main import main
from slimlm.models import load, save


@pytest.fixture
def remote_dir(tmp_path):
    d = tmp_path / "remote"
    save(load("tiny:llama?layers=1&hidden=32&heads=2&kv_heads=1&ffn=64"), d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "custom.CustomConfig"}
    (d / "config.json").write_text(json.dumps(cfg))
    sentinel = tmp_path / "custom-code-ran"
    (d / "custom.py").write_text(
        f"open({str(sentinel)!r}, 'w').write('ran')\n"
        "from transformers import LlamaConfig\n\n\nclass CustomConfig(LlamaConfig):\n    model_type = 'llama'\n")
    (tmp_path / "text.txt").write_text("Shall I compare thee to a summer's day? Thou art more lovely.\n" * 60)
    return d, sentinel, tmp_path / "text.txt"


@pytest.mark.parametrize("argv", [
    ["evaluate", "{d}", "--data", "{text}", "--max-tokens", "64", "--seq-len", "32"],
    ["prune", "{d}", "--out", "{out}", "--method", "magnitude", "--data", "{text}"],
    ["quantize", "{d}", "--scheme", "int8-weight", "--out", "{out}"],
    ["generate", "{d}", "--out", "{out}", "--tokens", "8"],
])
def test_refused_by_default_and_nothing_runs(remote_dir, tmp_path, capsys, argv):
    d, sentinel, text = remote_dir
    args = [a.format(d=d, text=text, out=tmp_path / "out") for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "auto_map" in err and "--trust-remote-code" in err
    assert not sentinel.exists() and not (tmp_path / "out").exists()


def test_the_flag_lets_transformers_import_the_code(remote_dir, capsys):
    d, sentinel, text = remote_dir
    main(["evaluate", str(d), "--data", str(text), "--max-tokens", "64", "--seq-len", "32", "--trust-remote-code",
          "--json"])
    assert sentinel.exists()  # the user opted in: transformers imported the directory's module
