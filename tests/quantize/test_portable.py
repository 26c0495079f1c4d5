"""Quantized variants outside slimlm: plain transformers refuses slimlm's packed format loudly, and the torchao
copy written by `slimlm export --format transformers` loads in a process that never imports slimlm."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from slimlm.export import export
from slimlm.models import load
from slimlm.quantize import Int4WeightConfig, Int8DynamicConfig, Int8WeightConfig, quantize_
from slimlm.quantize import save as qsave

TINY = "tiny:qwen2?layers=2"
IDS = [[5, 17, 99, 120, 33, 250, 8, 64, 77, 12, 140, 201]]


def _logits(hf):
    with torch.inference_mode():
        return hf(torch.tensor(IDS)).logits


def test_plain_transformers_refuses_slimlm_packed_variant_instead_of_random_weights(tmp_path):
    m = load(TINY)
    quantize_(m, Int8WeightConfig())
    qsave(m, tmp_path / "q")
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "slimlm"
    with pytest.raises(OSError, match="no file named model.safetensors"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    assert torch.equal(_logits(load(tmp_path / "q").hf), _logits(m.hf))  # slimlm itself still loads it


@pytest.mark.parametrize("config", [Int8WeightConfig(), Int8DynamicConfig(), Int4WeightConfig(method="rtn", group_size=16),
                                    Int8WeightConfig(skip=()),  # a tied pair as one int8 matrix: copied untied
                                    Int4WeightConfig(method="rtn", group_size=16, skip=())],  # the same, int4
                         ids=["int8-weight", "int8-dynamic", "int4-weight", "int8-weight-tied-ends",
                              "int4-weight-tied-ends"])
def test_torchao_copy_loads_in_plain_transformers_without_slimlm(config, tmp_path):
    m = load(TINY)
    with torch.no_grad():
        m.adapter.final_norm().weight.mul_(8.0)  # peaked outputs, so differences show
    quantize_(m, config)
    ours = _logits(m.hf)
    res = export(m, "transformers", tmp_path / "t", sample_text="The quality of mercy is not strained. " * 40)
    assert res["precision"] == res["type"] == config.scheme and res["check"]["passed"]
    code = ("import sys, json, torch; from transformers import AutoModelForCausalLM; "
            f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path / 't')!r}).eval(); "
            f"out = m(torch.tensor({IDS})).logits; "
            "assert 'slimlm' not in sys.modules; print(json.dumps(out.tolist()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": "", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    plain = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    err = (plain - ours).pow(2).mean() / ours.pow(2).mean()
    assert err < (1e-6 if config.scheme == "int8-weight" else 1e-3), err  # the same int8/int4 grid
