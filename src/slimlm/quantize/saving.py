"""The saved format of a quantized variant, and ``restore`` (called by `slimlm.models.load`).

A quantized variant is a normal slimlm variant directory: ``save_pretrained`` writes every tensor of the
state dict, so quantized layers land in the safetensors file as they are held in memory (int8 weights,
int4 weights packed two per byte, bf16 group scales, uint8 zero points) and fp32 layers as fp32. The
``quantization`` key of ``slimlm.json`` lists each quantized module with its kind and options. On load,
transformers builds the fp32 skeleton (it ignores the quantized tensors and leaves those layers at their
initial values); `restore` then reads the quantized tensors and swaps the same modules back in, so the
reloaded model computes exactly what the saved one did.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from slimlm.errors import ModelFileError
from slimlm.quantize.fallback import set_module
from slimlm.quantize.modules import KINDS, QuantModule, share_input_quantization

FORMAT = 1


def describe(hf: nn.Module) -> dict:
    """The ``quantization`` entry of ``slimlm.json`` for a model holding quantized modules ({} if none)."""
    layers = {name: m.meta() for name, m in hf.named_modules() if isinstance(m, QuantModule)}
    if not layers:
        return {}
    return {"format": FORMAT, "layers": layers,
            "tie_word_embeddings": bool(getattr(hf.config, "tie_word_embeddings", False))}


def logical_params(hf: nn.Module) -> int:
    """Parameters the model represents: fp parameters plus the weights held by quantized modules."""
    seen, total = set(), 0
    for p in hf.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total + sum(m.logical_params() for m in hf.modules() if isinstance(m, QuantModule))


def restore(hf: nn.Module, meta: dict, path: str | Path | None) -> nn.Module:
    """Swap the quantized modules listed in ``meta`` back into ``hf``, reading their tensors under ``path``."""
    from safetensors import safe_open

    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: quantization format {meta.get('format')!r} is not supported by this "
                             f"slimlm (it reads format {FORMAT}); upgrade slimlm.")
    files = sorted(Path(path).glob("*.safetensors"))
    wanted = meta["layers"]
    tensors: dict[str, dict] = {name: {} for name in wanted}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():
                prefix, _, attr = key.rpartition(".")
                if prefix in tensors:
                    tensors[prefix][attr] = fh.get_tensor(key)
    for name, info in wanted.items():
        cls = KINDS.get(info["kind"])
        if cls is None or not tensors[name]:
            raise ModelFileError(f"{path}: quantized layer {name} ({info['kind']}) is missing from the weights; "
                                 "the directory is incomplete: save the variant again.")
        set_module(hf, name, cls.from_state(tensors[name], info))
    if "tie_word_embeddings" in meta:
        hf.config.tie_word_embeddings = meta["tie_word_embeddings"]
    share_input_quantization(hf)
    return hf


def save(model, out_dir: str | Path, config=None, report: dict | None = None, metrics: dict | None = None) -> Path:
    """Save a quantized `Model` as a variant directory that `slimlm.models.load` reloads bit for bit."""
    from slimlm.models import save as save_model

    stage = {"kind": "quantize", "config": config.model_dump(mode="json") if config is not None else None}
    if report:
        stage["report"] = {k: v for k, v in report.items() if k in ("quantized", "fp32_layers", "fallback", "qat")}
    return save_model(model, out_dir, stage=stage, metrics=metrics, extra={"quantization": describe(model.hf)})
