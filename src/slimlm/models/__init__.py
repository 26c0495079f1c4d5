"""Models: ``load(spec) -> Model``, ``save(model, dir)``, and family adapters."""

from slimlm.models.adapters import (
    AttentionParts,
    BertAdapter,
    FamilyAdapter,
    GemmaAdapter,
    LlamaAdapter,
    MLPParts,
    adapter_for,
)
from slimlm.models.loading import BUILTINS, META_FILE, Model, load, save

__all__ = [
    "AttentionParts", "BertAdapter", "BUILTINS", "FamilyAdapter", "GemmaAdapter", "LlamaAdapter", "META_FILE", "MLPParts",
    "Model", "adapter_for", "load", "save",
]
