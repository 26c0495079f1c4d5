import pytest
import yaml

from slimlm.errors import ConfigError
from slimlm.recipes import builtin_names, load_recipe, recipe_from_dict


def test_required_builtins_exist():
    assert {"quick", "balanced", "aggressive", "int8-only", "sparse-50"} <= set(builtin_names())


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_validates_and_round_trips(name):
    r = load_recipe(name)
    again = recipe_from_dict(yaml.safe_load(r.to_yaml()))
    assert [s.key() for s in again.stages] == [s.key() for s in r.stages]
    assert [s.kind for s in r.stages] and r.description


@pytest.mark.parametrize("stages,path", [
    ([{"prune": {"method": "wanda", "sparsty": 0.5}}], "stages[0].prune"),
    ([{"prune": {"method": "wanda"}}, {"quantize": {"scheme": "int4-weight", "group_size": 33}}],
     "stages[1].quantize"),
    ([{"distill": {"steps": 0}}], "stages[0].distill"),
    ([{"quantise": {"scheme": "int8-dynamic"}}], "stages[0] must have exactly one of"),
    ([{"quantize": {"scheme": "int8-dynamic"}, "calibration": {"samples": 0}}], "stages[0].calibration.samples"),
])
def test_bad_fields_fail_with_their_path(stages, path):
    with pytest.raises(ConfigError) as exc:
        recipe_from_dict({"name": "x", "stages": stages}, source="my.yaml")
    assert path in str(exc.value) and str(exc.value).startswith("my.yaml")


def test_field_name_is_in_the_message():
    with pytest.raises(ConfigError, match="sparsty"):
        recipe_from_dict({"name": "x", "stages": [{"prune": {"method": "wanda", "sparsty": 0.5}}]})


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="builtin recipes: .*quick"):
        load_recipe("nonexistent")
    bad = tmp_path / "r.yaml"
    bad.write_text("name: x\nstages: [\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    empty = tmp_path / "e.yaml"
    empty.write_text("name: x\nstages: []\n")
    with pytest.raises(ConfigError, match="non-empty list"):
        load_recipe(empty)


def test_stage_key_depends_on_config_and_calibration():
    a = recipe_from_dict({"name": "a", "stages": [{"prune": {"method": "wanda", "sparsity": 0.5}}]}).stages[0]
    b = recipe_from_dict({"name": "b", "stages": [{"prune": {"method": "wanda", "sparsity": 0.5}}]}).stages[0]
    c = recipe_from_dict({"name": "c", "stages": [{"prune": {"method": "wanda", "sparsity": 0.4}}]}).stages[0]
    d = recipe_from_dict({"name": "d", "stages": [{"prune": {"method": "wanda", "sparsity": 0.5},
                                                   "calibration": {"samples": 8}}]}).stages[0]
    assert a.key() == b.key() and len({a.key(), c.key(), d.key()}) == 3


def test_calibration_can_mix_general_text_and_old_keys_stay():
    import torch

    from slimlm.calibration import make_calibration
    from slimlm.data import load_data
    from slimlm.models import load
    from slimlm.recipes import recipe_from_dict

    plain = recipe_from_dict({"name": "a", "stages": [{"prune": {"method": "wanda", "sparsity": 0.5},
                                                        "calibration": {"samples": 8, "seq_len": 32}}]})
    mixed = recipe_from_dict({"name": "b", "stages": [{"prune": {"method": "wanda", "sparsity": 0.5},
                                                        "calibration": {"samples": 8, "seq_len": 32,
                                                                        "general_data": "pydoc",
                                                                        "general_share": 0.5}}]})
    # the key of an unmixed stage does not change with the new fields (runs made before them resume)
    import hashlib
    import json

    st = plain.stages[0]
    before = json.dumps({"kind": st.kind, "config": st.config_dict(),
                         "calibration": {"samples": 8, "seq_len": 32, "seed": 0}}, sort_keys=True)
    assert st.key() == hashlib.sha256(before.encode()).hexdigest()[:16]
    assert plain.stages[0].key() != mixed.stages[0].key()
    m = load("tiny:llama")
    dom, gen = load_data("shakespeare"), load_data("pydoc")
    only = make_calibration(m, dom, n=8, seq_len=32)
    mix = make_calibration(m, dom, n=8, seq_len=32, general=gen, general_share=0.5)
    assert mix.tokens.shape == only.tokens.shape == (8, 32)
    from slimlm.data import calibration_batch

    general_rows = {tuple(r) for r in calibration_batch(m.tokenizer, gen, 4, 32).tolist()}
    assert sum(tuple(r) in general_rows for r in mix.tokens.tolist()) == 4
    assert not any(tuple(r) in general_rows for r in only.tokens.tolist())
    assert torch.equal(mix.tokens, make_calibration(m, dom, n=8, seq_len=32, general=gen, general_share=0.5).tokens)


def test_general_share_without_general_data_is_refused():
    from slimlm.errors import ConfigError
    from slimlm.recipes import recipe_from_dict

    with pytest.raises(ConfigError, match="general_data"):
        recipe_from_dict({"name": "a", "stages": [{"prune": {"method": "wanda", "sparsity": 0.5},
                                                    "calibration": {"general_share": 0.5}}]})
