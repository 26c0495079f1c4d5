"""Low-rank factorisation (truncated SVD): smaller, exact at full rank, saved and restored, usable in recipes
and search spaces through the method contract alone."""

import pytest
import torch

from slimlm.models import load, save
from slimlm.prune import LowRankConfig, make_config, prune_
from slimlm.prune.lowrank import LowRankLinear, rank_for


def test_factors_reproduce_the_layer_up_to_the_dropped_singular_values():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    full = LowRankLinear.from_linear(lin, 48)
    x = torch.randn(5, 64)
    assert torch.allclose(full(x), lin(x), atol=1e-5)  # full rank: the same function
    r = 12
    low = LowRankLinear.from_linear(lin, r)
    s = torch.linalg.svdvals(lin.weight.detach())
    err = torch.linalg.matrix_norm(low.up.weight @ low.down.weight - lin.weight.detach())
    assert err.item() == pytest.approx(s[r:].pow(2).sum().sqrt().item(), rel=1e-4)  # Eckart-Young optimum


def test_rank_is_skipped_when_it_would_not_save_parameters():
    assert rank_for(torch.nn.Linear(64, 64), 0.25, 8) == 16
    assert rank_for(torch.nn.Linear(64, 64), 0.75, 8) is None  # 48·128 > 64·64


def test_prune_shrinks_the_mlp_and_reloads_identically(trained, eval_windows, lm_loss, tmp_path):
    before = trained.num_params()
    base_loss = lm_loss(trained, eval_windows)
    report = prune_(trained, LowRankConfig(rank=0.25), None)
    assert report["factorised"] == 3 * 3 and report["params_after"] < before
    assert isinstance(trained.hf.model.layers[0].mlp.down_proj, LowRankLinear)
    assert lm_loss(trained, eval_windows) > base_loss  # truncation costs something; distillation recovers it
    save(trained, tmp_path / "lr", stage={"kind": "prune", "config": LowRankConfig(rank=0.25).model_dump()})
    back = load(tmp_path / "lr")
    ids = eval_windows[:2]
    with torch.inference_mode():
        assert torch.equal(back.hf(ids).logits, trained.hf(ids).logits)
    assert back.num_params() == trained.num_params()


def test_lowrank_then_int8_composes_and_reloads(trained, eval_windows, tmp_path):
    from slimlm.quantize import Int8DynamicConfig, quantize_
    from slimlm.quantize import save as qsave

    prune_(trained, LowRankConfig(rank=0.25), None)
    quantize_(trained, Int8DynamicConfig())  # the two factors are Linears like any other
    qsave(trained, tmp_path / "q", config=Int8DynamicConfig())
    back = load(tmp_path / "q")
    ids = eval_windows[:2]
    with torch.inference_mode():
        assert torch.equal(back.hf(ids).logits, trained.hf(ids).logits)


def test_the_method_reaches_recipes_search_and_report_through_its_config():
    from slimlm.recipes import config_from_stage, recipe_from_dict
    from slimlm.search import space_from_dict

    cfg = make_config("lowrank", rank=0.5)
    assert cfg.label() == "lowrank 0.5 mlp" and not cfg.needs_calibration and "dense" in cfg.hardware()
    r = recipe_from_dict({"name": "x", "stages": [{"prune": {"method": "lowrank", "rank": 0.5}},
                                                  {"quantize": {"scheme": "int8-dynamic"}}]})
    assert [s.label() for s in r.stages] == ["lowrank 0.5 mlp", "int8-dynamic"]
    sp = space_from_dict({"choices": {"lowrank": [0.0, 0.25], "quantize": ["none", "int8-dynamic"]}}, "s")
    built = sp.build({"lowrank": 0.25, "quantize": "int8-dynamic"})
    assert [s.config.method_name() for s in built.stages] == ["lowrank", "int8-dynamic"]
    assert sp.build({"lowrank": 0.0, "quantize": "none"}) is None
    assert config_from_stage({"kind": "prune", "config": cfg.model_dump()}) == cfg
