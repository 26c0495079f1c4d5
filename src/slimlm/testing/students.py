"""Tiny students and corpora for distillation tests and dry runs (until `slimlm.prune` is used).

``drop_layers`` copies a model and removes transformer blocks the way structured layer pruning does
(ModuleList surgery plus the config key), recording the kept layers in the provenance so that the
hidden-state layer map can be derived from it. ``small_corpus`` cuts a few Shakespeare plays short so a
test packs its data in milliseconds.
"""

from __future__ import annotations

import copy

from torch import nn

from slimlm.data import Corpus, Document, load_data
from slimlm.models import Model


def drop_layers(model: Model, keep: list[int]) -> Model:
    """A deep copy of ``model`` keeping only the blocks listed in ``keep`` (in order)."""
    new = Model(hf=copy.deepcopy(model.hf), tokenizer=model.tokenizer, spec=f"{model.spec}#layers={len(keep)}",
                provenance=copy.deepcopy(model.provenance))
    layers = new.adapter.layers()
    kept = nn.ModuleList(layers[i] for i in keep)
    for new_idx, layer in enumerate(kept):
        attn = getattr(layer, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new_idx  # the KV cache indexes layers by position
    parent = layers
    owner = new.adapter.base() if hasattr(new.adapter.base(), "layers") else new.adapter.base().encoder
    attr = "layers" if hasattr(owner, "layers") else "layer"
    assert getattr(owner, attr) is parent
    setattr(owner, attr, kept)
    new.hf.config.num_hidden_layers = len(keep)
    if getattr(new.hf.config, "layer_types", None):
        new.hf.config.layer_types = [new.hf.config.layer_types[i] for i in keep]
    new.provenance.pop("hash", None)
    new.provenance["stages"] = list(new.provenance.get("stages", [])) + [
        {"kind": "prune", "config": {"method": "drop_layers"}, "kept_layers": list(keep)}]
    new.provenance["parent"] = {"spec": model.provenance.get("spec", model.spec), "hash": model.hash}
    return new


def small_corpus(chars: int = 20_000, plays: int = 3, base: Corpus | None = None) -> Corpus:
    """Shakespeare (or ``base``) with each split cut to ``plays`` documents of ``chars`` characters."""
    base = base or load_data("shakespeare")
    splits = {name: [Document(d.text[:chars], d.source, d.label) for d in docs[:plays]]
              for name, docs in base.splits.items()}
    return Corpus(f"{base.name}[small]", splits, labels=base.labels)
