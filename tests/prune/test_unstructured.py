import pytest
import torch
import yaml

from slimlm.errors import ConfigError
from slimlm.models import load
from slimlm.prune import (
    MagnitudeConfig,
    SparseGPTConfig,
    WandaConfig,
    config_from_dict,
    make_config,
    prune_,
)

METHODS = ["magnitude", "wanda", "sparsegpt"]


def _block_weights(model):
    return model.adapter.block_linears()


@pytest.mark.parametrize("method", METHODS)
def test_uniform_sparsity_is_exact_per_layer(method, trained, calib):
    report = prune_(trained, make_config(method, sparsity=0.5), calib)
    for name, lin in _block_weights(trained).items():
        assert (lin.weight == 0).sum().item() == lin.weight.numel() // 2, name
    assert report["sparsity"] == 0.5
    assert all(row["achieved"] == 0.5 for row in report["layers"])
    assert report["params_after"] == report["params_before"]  # unstructured keeps shapes


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_nm_pattern_holds_in_every_group(method, pattern, trained, calib):
    n, m = map(int, pattern.split(":"))
    report = prune_(trained, make_config(method, pattern=pattern), calib)
    for name, lin in _block_weights(trained).items():
        groups = lin.weight.reshape(-1, m)
        assert ((groups != 0).sum(1) == n).all(), name  # exactly N kept in every group of M
    assert report["sparsity"] == pytest.approx(1 - n / m, abs=0)


@pytest.mark.parametrize("method", METHODS)
def test_owl_varies_layers_and_keeps_global_sparsity(method, trained, calib):
    report = prune_(trained, make_config(method, sparsity=0.5, allocation="owl", owl_lambda=0.1), calib)
    targets = [r["target"] for r in report["layers"]]
    assert max(targets) - min(targets) == pytest.approx(0.2, abs=1e-6)  # spans sparsity ± lambda
    for row in report["layers"]:  # each layer reaches its own target to the weight
        assert row["achieved"] == pytest.approx(row["target"], abs=1e-3)
    assert report["sparsity"] == pytest.approx(0.5, abs=1e-3)


def _add_outlier_channels(model, channels=8, scale=50.0):
    """Give a few hidden channels LLM-like activation outliers without changing the function: the norms scale
    those channels up and the Linears that read them scale their weights down (so magnitude misjudges them)."""
    a = model.adapter
    ch = torch.arange(channels) * 7
    with torch.no_grad():
        for layer in a.layers():
            for norm in a.norms(layer):
                norm.weight[ch] *= scale
            p, m = a.attention(layer), a.mlp(layer)
            for lin in (p.q, p.k, p.v, m.gate, m.up):
                lin.weight[:, ch] /= scale


def test_calibrated_methods_beat_magnitude_on_a_trained_model(trained, calib, eval_windows, lm_loss):
    import copy

    from slimlm.models import Model

    dense = lm_loss(trained, eval_windows)
    _add_outlier_channels(trained)
    assert lm_loss(trained, eval_windows) == pytest.approx(dense, abs=1e-4)  # same function
    excess = {}
    for method in METHODS:
        m = Model(hf=copy.deepcopy(trained.hf), tokenizer=trained.tokenizer, spec="t")
        prune_(m, make_config(method, sparsity=0.5), calib)
        excess[method] = lm_loss(m, eval_windows) - dense
    assert excess["magnitude"] > 0.02, excess
    assert excess["wanda"] < 0.75 * excess["magnitude"], excess
    assert excess["sparsegpt"] < 0.5 * excess["magnitude"], excess


def test_lm_head_and_embeddings_are_excluded_unless_included(trained, calib):
    emb = trained.adapter.embeddings().weight
    prune_(trained, WandaConfig(sparsity=0.5), calib)
    assert (emb == 0).sum().item() == 0
    prune_(trained, MagnitudeConfig(sparsity=0.5, include=("lm_head", "embeddings")))
    emb = trained.adapter.embeddings().weight
    assert (emb == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_update_halves_the_layer_reconstruction_error(nm):
    """The inverse-Hessian update matters: with correlated inputs, the output error is far below mask-only."""
    from slimlm.prune.sparsegpt import sparsegpt_

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 64, generator=g) @ torch.randn(64, 64, generator=g) * 0.3 + torch.randn(64, generator=g)
    w0 = torch.randn(32, 64, generator=g)
    w = w0.clone()
    mask = sparsegpt_(w, x.T @ x, x.shape[0], sparsity=0.5, nm=nm, blocksize=16)
    assert (w == 0).float().mean().item() == 0.5
    assert (w[mask] == 0).all()
    masked = w0.clone()
    masked[mask] = 0

    def err(a):
        return ((x @ a.T - x @ w0.T) ** 2).mean().item()

    assert err(w) < 0.6 * err(masked)


def test_invalid_configs_fail_with_the_field_name():
    with pytest.raises(ConfigError, match="sparsity"):
        make_config("wanda", sparsity=1.5)
    with pytest.raises(ConfigError, match="2:4 means sparsity 0.5"):
        make_config("wanda", pattern="2:4", sparsity=0.6)
    with pytest.raises(ConfigError, match="allocation uniform"):
        make_config("sparsegpt", pattern="2:4", allocation="owl")
    with pytest.raises(ConfigError, match="spars"):
        make_config("magnitude", sparsty=0.5)  # typo: extra fields are forbidden


def test_pattern_that_does_not_divide_the_width_fails_before_work(calib):
    model = load("tiny:llama")
    with pytest.raises(ConfigError, match="multiple of 3"):
        prune_(model, make_config("magnitude", pattern="1:3"), calib)
    assert all((lin.weight != 0).all() for lin in model.adapter.block_linears().values())


def test_configs_round_trip_through_yaml():
    for cfg in (WandaConfig(sparsity=0.4, allocation="owl"), SparseGPTConfig(pattern="2:4"),
                make_config("structured", layers=6, heads=0.33, vocab="domain")):
        text = yaml.safe_dump(cfg.model_dump(mode="json"))
        assert config_from_dict(yaml.safe_load(text)) == cfg
