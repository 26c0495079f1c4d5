"""The method registry and contract: every registered method answers what the rest of slimlm asks."""

import pytest

import slimlm.distill  # noqa: F401  (registration happens on import)
import slimlm.prune  # noqa: F401
import slimlm.quantize  # noqa: F401
from slimlm.errors import ConfigError
from slimlm.methods import REGISTRY, MethodConfig, parse_method


def test_every_family_is_registered_with_its_methods():
    assert set(REGISTRY) == {"prune", "distill", "quantize"}
    assert {"structured", "magnitude", "wanda", "sparsegpt", "lowrank"} <= set(REGISTRY["prune"])
    assert {"int8-dynamic", "int8-weight", "int4-weight", "qat"} <= set(REGISTRY["quantize"])


@pytest.mark.parametrize("family,name", [(f, n) for f, t in REGISTRY.items() for n in t])
def test_each_method_answers_the_contract(family, name):
    cls = REGISTRY[family][name]
    assert issubclass(cls, MethodConfig) and cls.family == family and cls.method_name() == name
    defaults = {"structured": {"layers": 1}, "qat": {"target": {"scheme": "int8-dynamic"}}}.get(name, {})
    cfg = parse_method(family, {**({cls.key_field: name} if cls.key_field else {}), **defaults})
    assert isinstance(cfg.label(), str) and cfg.label()
    assert isinstance(cfg.needs_calibration, bool) and isinstance(cfg.hardware(), str)
    assert parse_method(family, cfg.model_dump(mode="json")) == cfg  # round-trips through a recipe's YAML


def test_parse_errors_name_the_method_and_field():
    with pytest.raises(ConfigError, match="unknown prune method 'wandda'"):
        parse_method("prune", {"method": "wandda"})
    with pytest.raises(ConfigError, match="sparsity"):
        parse_method("prune", {"method": "wanda", "sparsity": 2})
    with pytest.raises(ConfigError, match="invalid distill distill config: steps"):
        parse_method("distill", {"steps": 0})
