"""Configs validate on their own, round-trip through YAML, and model-dependent checks fail clearly."""

import pytest
import yaml

from slimlm.errors import ConfigError
from slimlm.quantize import (
    FallbackConfig,
    Int4WeightConfig,
    Int8DynamicConfig,
    QATConfig,
    check_config,
    parse_config,
    valid_group_sizes,
)


def test_invalid_group_size_lists_valid_values(tiny):
    with pytest.raises(ConfigError) as exc:
        check_config(tiny, Int4WeightConfig(group_size=48))  # hidden 64: 48 does not divide it
    msg = str(exc.value)
    assert "group size 48" in msg and "valid group sizes for this model: 2, 4, 8, 16, 32, 64" in msg


def test_smollm2_widths_valid_group_sizes():
    assert valid_group_sizes([576, 1536]) == [2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 192]
    assert 128 not in valid_group_sizes([576, 1536])


def test_odd_group_size_fails_in_config():
    with pytest.raises(ConfigError, match="group_size"):
        parse_config({"scheme": "int4-weight", "group_size": 33})


@pytest.mark.parametrize("data, field", [
    ({"scheme": "int8-dynamic", "smoothquant": 1.5}, "smoothquant"),
    ({"scheme": "int8-dynamic", "skip": "lm_head,embeddings"}, "skip"),
    ({"scheme": "int8-weight", "colour": "red"}, "colour"),
    ({"scheme": "int3"}, "scheme"),
])
def test_errors_name_the_field(data, field):
    with pytest.raises(ConfigError, match=field):
        parse_config(data)


@pytest.mark.parametrize("config", [
    Int8DynamicConfig(smoothquant=0.5, fallback=FallbackConfig(tolerance=0.02)),
    Int4WeightConfig(group_size=64, method="rtn", skip=()),
    QATConfig(target=Int4WeightConfig(group_size=32), steps=5, only_if_drop_above=0.05),
])
def test_yaml_round_trip(config):
    text = yaml.safe_dump(config.model_dump(mode="json"))
    assert parse_config(yaml.safe_load(text)) == config


def test_skip_parses_cli_strings():
    assert Int8DynamicConfig(skip="none").skip == ()
    assert Int8DynamicConfig(skip="lm_head").skip == ("lm_head",)
