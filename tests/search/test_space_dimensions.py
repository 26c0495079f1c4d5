"""The search dimensions that tune a recipe rather than pick a method: vocabulary trimming, SmoothQuant
strength, distillation loss mix and general-data share."""

import pytest

from slimlm.errors import ConfigError
from slimlm.search import space_from_dict


def _stages(recipe):
    return {s.kind: s for s in recipe.stages}


def test_vocab_smoothquant_and_distill_mix_reach_the_recipe():
    sp = space_from_dict({"choices": {"layers": [2], "vocab": ["domain"], "distill_steps": [10],
                                      "distill_alpha": [0.5], "distill_general_share": [0.25],
                                      "quantize": ["int8-dynamic"], "smoothquant": [0.8]},
                          "fixed": {"distill": {"general_data": "pydoc"}}}, "t")
    r = sp.build({"layers": 2, "vocab": "domain", "distill_steps": 10, "distill_alpha": 0.5,
                  "distill_general_share": 0.25, "quantize": "int8-dynamic", "smoothquant": 0.8})
    st = _stages(r)
    assert st["prune"].config.vocab == "domain" and st["prune"].config.layers == 2
    d = st["distill"].config
    assert (d.alpha, d.general_share, d.general_data) == (0.5, 0.25, "pydoc")
    assert st["quantize"].config.smoothquant == 0.8


def test_off_values_leave_the_recipe_as_before():
    sp = space_from_dict({"choices": {"layers": [2], "vocab": ["none"], "distill_steps": [10],
                                      "quantize": ["int8-dynamic"], "smoothquant": ["none"]}}, "t")
    st = _stages(sp.build({"layers": 2, "vocab": "none", "distill_steps": 10, "quantize": "int8-dynamic",
                           "smoothquant": "none"}))
    assert st["prune"].config.vocab is None
    assert st["distill"].config.alpha == 0.0 and st["distill"].config.general_share == 0.0
    assert st["quantize"].config.smoothquant is None


def test_vocab_keep_reaches_the_prune_stage_only_with_a_domain_vocabulary():
    sp = space_from_dict({"choices": {"vocab": ["domain", "none"], "vocab_keep": ["pydoc"], "layers": [2]}}, "t")
    kept = _stages(sp.build({"vocab": "domain", "vocab_keep": "pydoc", "layers": 2}))["prune"].config
    assert (kept.vocab, kept.vocab_keep) == ("domain", "pydoc") and "vocab_keep=pydoc" in kept.label()
    plain = _stages(sp.build({"vocab": "none", "vocab_keep": "pydoc", "layers": 2}))["prune"].config
    assert plain.vocab is None and plain.vocab_keep is None


def test_vocab_alone_is_a_structured_stage():
    st = _stages(space_from_dict({"choices": {"vocab": ["domain"]}}, "t").build({"vocab": "domain"}))
    assert st["prune"].config.vocab == "domain" and not st["prune"].config.layers


def test_smoothquant_strength_applies_to_int8_dynamic_only():
    sp = space_from_dict({"choices": {"quantize": ["int8-weight"], "smoothquant": [0.5]}}, "t")
    assert not hasattr(_stages(sp.build({"quantize": "int8-weight", "smoothquant": 0.5}))["quantize"].config,
                       "smoothquant")


def test_int4_kernel_is_a_dimension_of_int4_stages_only():
    sp = space_from_dict({"choices": {"quantize": ["int4-weight", "int8-weight"],
                                      "int4_kernel": ["dequant", "int4pack"]}}, "t")
    fast = _stages(sp.build({"quantize": "int4-weight", "int4_kernel": "int4pack"}))["quantize"]
    assert fast.config.kernel == "int4pack"
    ref = _stages(sp.build({"quantize": "int4-weight", "int4_kernel": "dequant"}))["quantize"]
    plain = _stages(space_from_dict({"choices": {"quantize": ["int4-weight"]}}, "t").build(
        {"quantize": "int4-weight"}))["quantize"]
    assert ref.config.kernel == "dequant" and ref.config == plain.config  # the off value changes nothing
    int8 = _stages(sp.build({"quantize": "int8-weight", "int4_kernel": "int4pack"}))["quantize"]
    assert not hasattr(int8.config, "kernel")


@pytest.mark.parametrize("choices, msg", [
    ({"smoothquant": [1.5], "quantize": ["int8-dynamic"]}, "smoothquant"),
    ({"distill_alpha": [2.0], "distill_steps": [5], "layers": [1]}, "alpha"),
    ({"vocab": ["all"]}, "vocab"),
    ({"int4_kernel": ["fast"], "quantize": ["int4-weight"]}, "kernel"),
])
def test_out_of_range_values_fail_before_the_study(choices, msg):
    with pytest.raises(ConfigError, match=msg):
        space_from_dict({"choices": choices}, "s.yaml")


def test_a_space_fitted_to_a_shallow_model_leaves_out_the_layer_counts_it_does_not_have():
    from slimlm.models import load
    from slimlm.search.space import load_space

    builtin = load_space("builtin")
    assert builtin.choices["layers"] == [0, 2, 4, 6]
    fitted, dropped = builtin.fit(load("tiny:bert"))  # 4 layers: removing 4 or 6 would leave none
    assert fitted.choices["layers"] == [0, 2] and fitted.choices["quantize"] == builtin.choices["quantize"]
    assert len(dropped) == 2 and all("would remove all 4 layers" in d for d in dropped)
    assert dropped[0].startswith("layers=4")
    deep, none_dropped = builtin.fit(load("tiny:llama?layers=8"))
    assert deep.choices == builtin.choices and none_dropped == []
    only_deep = space_from_dict({"choices": {"layers": [4, 6]}}, "t")
    with pytest.raises(ConfigError, match="can take none of layers"):
        only_deep.fit(load("tiny:bert"))
