"""`slimlm finetune` trains encoder classifiers: a decoder is refused by what it is, before anything is built."""

import json

import pytest

from slimlm.cli.finetune_cmd import _decoder_family
from slimlm.cli.main import main


def _config_dir(tmp_path, model_type):
    d = tmp_path / model_type
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": model_type}))
    return str(d)


@pytest.mark.parametrize("spec,family", [
    ("tiny:llama", "llama"), ("tiny:qwen3?layers=2", "qwen3"), ("tiny:phi3", "phi3"), ("tiny:bert", None),
    ("tiny:bert?labels=6", None), ("tiny:nosuch", None), ("builtin:smollm2-135m", "llama"),
    ("builtin:minilm-l6", None), ("org/some-model", None),
])
def test_decoder_family_from_the_spec(spec, family):
    assert _decoder_family(spec) == family


def test_decoder_family_from_a_directory(tmp_path):
    assert _decoder_family(_config_dir(tmp_path, "mistral")) == "mistral"
    assert _decoder_family(_config_dir(tmp_path, "bert")) is None
    assert _decoder_family(_config_dir(tmp_path, "gpt2")) is None  # unsupported: loading says so
    assert _decoder_family(str(tmp_path / "nope")) is None


def test_finetune_of_a_decoder_says_so_without_naming_an_option_never_typed(tmp_path, capsys):
    out = tmp_path / "runs" / "ft-llama"
    assert main(["finetune", "tiny:llama", "--out", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "finetune trains encoder classifiers" in err and "tiny:llama is a decoder" in err
    assert "labels" not in err and "unknown option" not in err
    assert not (tmp_path / "runs").exists()
