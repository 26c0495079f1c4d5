"""Per-layer precision: the int4 scheme's most sensitive layers go to int8 weight-only (not fp32) until the
tolerance holds; the mix saves and reloads, is a search dimension and keeps old stage keys."""

import pytest
import torch

from slimlm.errors import ConfigError
from slimlm.models import load
from slimlm.models.qlayers import Int4WeightLinear, Int8WeightLinear
from slimlm.quantize import FallbackConfig, Int4WeightConfig, Int8WeightConfig, quantize_, save
from slimlm.quantize.base import parse_fallback
from slimlm.recipes import recipe_from_dict


def _int4(to, tol=2e-5):
    return Int4WeightConfig(method="rtn", group_size=16, fallback=FallbackConfig(tolerance=tol, holdout=4, to=to))


def test_sensitive_layers_go_to_int8_and_the_rest_stay_int4(tiny, calib, ids, tmp_path):
    report = quantize_(tiny, _int4("int8-weight"), calib)
    fb = report["fallback"]
    assert fb["to"] == "int8-weight" and fb["met"] and fb["ppl_ratio"] <= 1 + 2e-5
    assert fb["frontier"][0]["ppl_ratio"] > 1 + 2e-5  # int4 everywhere missed the tolerance
    mods = dict(tiny.hf.named_modules())
    int8 = report["int8_layers"]
    assert int8 and report["fp32_layers"] == [] and report["quantized"] == 14
    assert all(isinstance(mods[n], Int8WeightLinear) for n in int8)
    blocks = [n for n, m in mods.items() if isinstance(m, (Int4WeightLinear, Int8WeightLinear))]
    assert len(blocks) == 14 and sum(isinstance(mods[n], Int4WeightLinear) for n in blocks) == 14 - len(int8)
    with torch.inference_mode():
        out = tiny.hf(ids).logits
    path = save(tiny, tmp_path / "mixed", _int4("int8-weight"), report)
    back = load(str(path))
    with torch.inference_mode():
        assert torch.equal(back.hf(ids).logits, out)
    kinds = {type(m) for m in back.hf.modules()}
    assert {Int4WeightLinear, Int8WeightLinear} <= kinds


def test_int8_fallback_moves_no_more_layers_than_an_fp32_fallback_needs_plus_its_own_error(tiny, calib):
    fp32 = quantize_(load("tiny:llama?layers=2&hidden=64&heads=4&kv_heads=2&ffn=128&seed=0"), _int4("fp32", 1e-3),
                     calib)
    mixed = quantize_(tiny, _int4("int8-weight", 1e-3), calib)
    # the same sensitivity order; int8 layers carry their own small error, so they may need as many or more
    assert len(mixed["int8_layers"]) >= len(fp32["fp32_layers"])
    assert mixed["fallback"]["met"] and fp32["fallback"]["met"]


def test_a_fallback_to_the_schemes_own_type_is_refused(tiny, calib):
    cfg = Int8WeightConfig(fallback=FallbackConfig(tolerance=0.01, holdout=4, to="int8-weight"))
    with pytest.raises(ConfigError, match="changes nothing"):
        quantize_(tiny, cfg, calib)


@pytest.mark.parametrize("value, expected", [("none", None), ("0.02", {"tolerance": 0.02, "to": "fp32"}),
                                             ("2%", {"tolerance": 0.02, "to": "fp32"}),
                                             ("int8:1%", {"tolerance": 0.01, "to": "int8-weight"})])
def test_search_values_of_quantize_fallback(value, expected):
    assert parse_fallback(value) == expected


@pytest.mark.parametrize("bad", ["fp16:1%", "int8:", "0", "lots"])
def test_bad_search_values_of_quantize_fallback_say_what_is_accepted(bad):
    with pytest.raises(ValueError, match="int8:2%"):
        parse_fallback(bad)


def test_a_pick_builds_the_per_layer_stage_and_old_fallback_keys_stay(tmp_path):
    from slimlm.search.space import Space, load_space

    spec = tmp_path / "space.yaml"
    spec.write_text("name: t\nchoices:\n  quantize: [int4-weight]\n  quantize_fallback: ['int8:1%']\n")
    space = load_space(str(spec))
    assert isinstance(space, Space)
    cfg = space.build({"quantize": "int4-weight", "quantize_fallback": "int8:1%"}).stages[0].config
    assert cfg.fallback.to == "int8-weight" and cfg.fallback.tolerance == 0.01
    assert space.build({"quantize": "int4-weight", "quantize_fallback": "none"}).stages[0].config.fallback is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nchoices:\n  quantize: [int4-weight]\n  quantize_fallback: ['fp16:1%']\n")
    with pytest.raises(ConfigError, match="quantize_fallback"):
        load_space(str(bad))
    old = recipe_from_dict({"name": "a", "stages": [{"quantize": {"scheme": "int4-weight",
                                                                   "fallback": {"tolerance": 0.01}}}]})
    same = recipe_from_dict({"name": "b", "stages": [{"quantize": {"scheme": "int4-weight",
                                                                    "fallback": {"tolerance": 0.01, "to": "fp32"}}}]})
    mixed = recipe_from_dict({"name": "c", "stages": [{"quantize": {"scheme": "int4-weight",
                                                                     "fallback": {"tolerance": 0.01,
                                                                                  "to": "int8-weight"}}}]})
    assert old.stages[0].key() == same.stages[0].key() != mixed.stages[0].key()
