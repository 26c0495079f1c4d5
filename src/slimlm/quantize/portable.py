"""Quantized variants outside slimlm: back to float weights, and a copy plain transformers loads (torchao).

slimlm's own packed layers (`slimlm.models.qlayers`) are fast with slimlm's kernels but mean nothing to
plain ``transformers``; so a slimlm-quantized variant directory declares ``quantization_config:
{"quant_method": "slimlm"}`` in its config.json, which makes a plain ``from_pretrained`` stop with an
"unknown quantization type" error instead of silently loading random weights for every quantized layer.

`float_model` turns the packed layers back into fp32 Linears holding exactly the values slimlm computes
with: exporters (GGUF, ONNX, OpenVINO) start their own quantization from those. `save_transformers` writes
the same scheme in torchao's serialisation through transformers' ``TorchAoConfig``: int8-weight ->
``Int8WeightOnlyConfig``, int8-dynamic -> ``Int8DynamicActivationInt8WeightConfig``, int4-weight ->
``IntxWeightOnlyConfig(int4, PerGroup(g), asymmetric)``. Re-quantizing values that already lie on an
int4 grid with the same per-group ranges nearly reproduces them; int8 layers get slimlm's own int8 values
and scales copied in, so the torchao copy computes what the slimlm variant does (up to kernel rounding); it needs only ``transformers`` and ``torchao`` to load. Embeddings
quantized by slimlm are written as fp32 in that copy (torchao's int8 embedding does not serialise here).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

from slimlm.models.qlayers import QUANT_METHOD  # noqa: F401  (re-exported: the marker this module writes around)


class ScaledEmbedding(nn.Embedding):
    """An fp32 table whose rows are multiplied by ``embed_scale`` (Gemma's), as transformers' scaled word
    embeddings do; the factor is a non-persistent ``embed_scale`` buffer, as there (exporters skip it)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None, embed_scale: float):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        self.scalar_embed_scale = embed_scale
        self.register_buffer("embed_scale", torch.tensor(embed_scale), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) * self.embed_scale.to(self.weight.dtype)


def float_model(hf: nn.Module, tie: bool = True) -> nn.Module:
    """``hf`` itself when it has no slimlm quantized layers, else a copy with each one back as fp32.

    ``tie``: a quantized table that is its lm_head's weight (`QuantEmbedding.tied`) comes back as the very
    Parameter of that head, so exporters see one matrix (GGUF writes no separate ``output.weight``);
    False gives it its own copy of the values."""
    from slimlm.models.qlayers import QuantEmbedding, QuantModule, float_weight, set_module

    quant = [(n, m) for n, m in hf.named_modules() if isinstance(m, QuantModule)]
    if not quant:
        return hf
    new = copy.deepcopy(hf)
    for name, mod in sorted(quant, key=lambda nm: bool(getattr(nm[1], "tied_to", None))):  # heads before tables
        if isinstance(mod, QuantEmbedding):
            emb = (nn.Embedding(mod.num_embeddings, mod.embedding_dim, padding_idx=mod.padding_idx)
                   if mod.embed_scale == 1.0 else
                   ScaledEmbedding(mod.num_embeddings, mod.embedding_dim, mod.padding_idx, mod.embed_scale))
            head = new.get_submodule(mod.tied_to) if tie and mod.tied_to else None
            if isinstance(head, nn.Linear):  # tied again, and the copy's config says so
                emb.weight = head.weight
                new.config.tie_word_embeddings = True
                if hasattr(new.config, "get_text_config"):  # the same object for a text-only config
                    new.config.get_text_config().tie_word_embeddings = True
            else:
                emb.weight = nn.Parameter(float_weight(mod), requires_grad=False)
            set_module(new, name, emb)
            continue
        w = float_weight(mod)
        lin = nn.Linear(w.shape[1], w.shape[0], bias=mod.bias is not None)
        lin.weight = nn.Parameter(w, requires_grad=False)
        if mod.bias is not None:
            lin.bias = nn.Parameter(mod.bias.float().clone(), requires_grad=False)
        set_module(new, name, lin)
    return new.eval()


def _torchao_config(scheme: str, group_size: int | None):
    from torchao.quantization import (
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
        MappingType,
    )
    from torchao.quantization.granularity import PerGroup

    if scheme == "int8-weight":
        return Int8WeightOnlyConfig()
    if scheme == "int8-dynamic":
        return Int8DynamicActivationInt8WeightConfig()
    if scheme == "int4-weight":
        return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size or 32),
                                    mapping_type=MappingType.ASYMMETRIC)
    raise ValueError(scheme)


def scheme_of(hf: nn.Module) -> tuple[str, int | None, list[str]]:
    """(scheme, int4 group size, names of the quantized Linears) of a model holding slimlm quantized layers."""
    from slimlm.errors import ConfigError
    from slimlm.models.qlayers import QuantEmbedding, QuantModule

    layers = {n: m for n, m in hf.named_modules() if isinstance(m, QuantModule) and not isinstance(m, QuantEmbedding)}
    kinds = {m.kind for m in layers.values()}
    if len(kinds) != 1:
        raise ConfigError("this variant holds no slimlm-quantized Linear layers (or several schemes at once); "
                          "--format transformers writes a quantized variant (slimlm quantize first).")
    kind = kinds.pop()
    return kind, getattr(next(iter(layers.values())), "group_size", None), sorted(layers)


@torch.no_grad()
def _copy_int8_grid(q: nn.Module, ours: nn.Module, names: list[str]) -> None:
    """Put slimlm's own int8 values and per-row scales into torchao's tensors: torchao re-derives the scale
    as absmax / 127.5 (slimlm: absmax / 127), so re-quantizing would shift every weight by 0.4%."""
    for name in names:
        src = ours.get_submodule(name)
        w = q.get_submodule(name).weight
        if not (hasattr(w, "qdata") and hasattr(w, "scale")) or w.qdata.shape != src.qweight.shape:
            continue  # another torchao layout: keep its own re-quantization
        w.qdata.copy_(src.qweight)
        w.scale.copy_(src.scale.reshape(w.scale.shape).to(w.scale.dtype))


def save_transformers(model, out_dir: str | Path) -> dict:
    """Write the quantized ``model`` in torchao's format to ``out_dir``, loadable by plain transformers.

    Returns:
        ``{"scheme", "group_size", "torchao_config", "quantized_linears"}``.
    """
    from transformers import AutoModelForCausalLM, TorchAoConfig

    scheme, group_size, names = scheme_of(model.hf)
    hf = float_model(model.hf, tie=False)  # the saved copy is untied (as its config says)
    keep = [n for n, m in hf.named_modules() if isinstance(m, nn.Linear) and n not in set(names)]
    cfg = _torchao_config(scheme, group_size)
    with tempfile.TemporaryDirectory() as tmp:
        hf.config.quantization_config = None
        if hasattr(hf.config, "quantization_config"):
            del hf.config.quantization_config
        hf.save_pretrained(tmp)
        q = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, quantization_config=TorchAoConfig(
            cfg, modules_to_not_convert=keep or None))
    if scheme.startswith("int8"):
        _copy_int8_grid(q, model.hf, names)
    q.save_pretrained(out_dir)
    model.tokenizer.save_pretrained(out_dir)
    return {"scheme": scheme, "group_size": group_size, "torchao_config": type(cfg).__name__,
            "quantized_linears": len(names)}
