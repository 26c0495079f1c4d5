"""Recipes (ordered, validated stage lists that round-trip to YAML) and the cached pipeline that runs them."""

from slimlm.recipes.recipe import (
    KINDS,
    CalibrationSpec,
    Recipe,
    Stage,
    builtin_names,
    config_from_stage,
    load_recipe,
    recipe_from_dict,
)

__all__ = ["KINDS", "CalibrationSpec", "Recipe", "Stage", "builtin_names", "config_from_stage", "load_recipe", "recipe_from_dict"]
