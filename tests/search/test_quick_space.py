"""The packaged `quick` search space: it loads, its picks build the quick recipe's stages, and an unknown space
name lists the packaged ones."""

import pytest

from slimlm.errors import ConfigError
from slimlm.recipes.recipe import load_recipe
from slimlm.search import load_space


def test_quick_space_builds_the_quick_recipes_stages():
    space = load_space("quick")
    assert space.pruner.name == "median"
    recipe = space.build({"layers": 3, "ffn": 0.1, "distill_steps": 40, "quantize": "int8-weight",
                          "quantize_skip": "none"})
    quick = load_recipe("quick")
    assert recipe.stages[0].key() == quick.stages[0].key()  # the same prune: shares the stage cache
    d, dq = recipe.stages[1].config.model_dump(), quick.stages[1].config.model_dump()
    assert d.pop("eval_every") == 10 and dq.pop("eval_every") == 0  # evaluated, so the pruner sees the curve
    assert d == dq
    q = recipe.stages[2].config
    assert q.scheme == "int8-weight" and q.skip == ()


def test_an_unknown_space_lists_the_packaged_ones():
    with pytest.raises(ConfigError, match=r"builtin, quick"):
        load_space("nosuch")
