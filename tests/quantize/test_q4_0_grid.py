"""int4 on llama.cpp's Q4_0 grid (``symmetric``): the weights survive a Q4_0 requantization bit for bit, so
the variant runs in llama.cpp as q4_0 with the weights it was measured with; QAT trains on that grid."""

import gguf
import numpy as np
import torch

from slimlm.models import load
from slimlm.models.loading import save
from slimlm.models.qlayers import Int4WeightLinear
from slimlm.models.qmath import int4_dequantize, int4_group_params, int4_quantize
from slimlm.quantize import Int4WeightConfig, QATConfig, quantize_

Q4_0 = gguf.GGMLQuantizationType.Q4_0


def _requantized(w: np.ndarray) -> np.ndarray:
    return gguf.quants.dequantize(gguf.quants.quantize(w, Q4_0), Q4_0)


def test_symmetric_int4_weights_survive_llama_cpps_q4_0_quantizer_exactly():
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(0)) * 0.02
    w[0, :32] = 0.0  # an all-zero (pruned) group
    w[1, 5] = 0.5  # a positive peak: the scale comes out negative, as Q4_0's does
    w[2, 40] = -0.5
    out = {}
    for sym in (False, True):
        s, z = int4_group_params(w, 32, symmetric=sym)
        dq = int4_dequantize(int4_quantize(w, s, z, 32), s, z, 32).numpy()
        out[sym] = float(np.abs(_requantized(dq) - dq).max())
    assert out[True] == 0.0 and out[False] > 1e-4  # the asymmetric grid is not Q4_0's


def test_symmetric_int4_variant_maps_to_q4_0_and_exports_with_its_own_weights(tmp_path):
    from slimlm.export import export
    from slimlm.export.runtimes import runtime_type

    err = {}
    for sym in (False, True):
        m = load("tiny:llama?layers=2&merges=1")
        quantize_(m, Int4WeightConfig(method="rtn", group_size=32, symmetric=sym), None)
        assert runtime_type(m, "llamacpp")[0] == ("q4_0" if sym else "q4_1")
        r = export(m, "gguf", tmp_path / str(sym), precision="q4_0")
        assert r["check"]["passed"]
        tensor = next(t for t in gguf.GGUFReader(r["main_file"]).tensors if t.name == "blk.1.ffn_down.weight")
        assert tensor.tensor_type == Q4_0
        written = gguf.quants.dequantize(tensor.data, Q4_0).reshape(-1)
        own = m.hf.model.layers[1].mlp.down_proj.dequantized().numpy().reshape(-1)
        err[sym] = float(np.abs(written - own).max())
    assert err[True] == 0.0 and err[False] > 1e-4  # the file holds the weights the variant was measured with


def test_qat_on_the_q4_0_grid_converts_to_symmetric_layers_that_save_and_load(tmp_path):
    m = load("tiny:llama?layers=2")
    calib = torch.randint(4, 250, (12, 32), generator=torch.Generator().manual_seed(1))
    quantize_(m, QATConfig(target=Int4WeightConfig(method="rtn", group_size=32, symmetric=True), steps=3,
                           lr=1e-3, holdout=4), calib)
    layers = [x for x in m.hf.modules() if isinstance(x, Int4WeightLinear)]
    assert layers and all(x.symmetric and bool((x.zero == 8).all()) for x in layers)
    for x in layers:  # still on the grid after training: a Q4_0 requantization changes nothing
        dq = x.dequantized().numpy()
        assert np.array_equal(_requantized(dq), dq)
    save(m, tmp_path / "v")
    back = [x for x in load(str(tmp_path / "v")).hf.modules() if isinstance(x, Int4WeightLinear)]
    assert all(x.symmetric for x in back) and torch.equal(back[0].qweight, layers[0].qweight)


def test_quantize_cli_symmetric_flag_reaches_the_config(capsys, tmp_path):
    from slimlm.cli.main import main

    code = main(["quantize", "tiny:llama?layers=1", "--scheme", "int4-weight", "--method", "rtn", "--symmetric",
                 "--out", str(tmp_path / "q"), "--json"])
    assert code == 0, capsys.readouterr().err
    layers = [x for x in load(str(tmp_path / "q")).hf.modules() if isinstance(x, Int4WeightLinear)]
    assert layers and all(x.symmetric for x in layers)
    assert load(str(tmp_path / "q")).provenance["stages"][-1]["config"]["symmetric"] is True
