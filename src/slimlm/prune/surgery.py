"""Surgery: physical removal of layers, heads, FFN channels, hidden channels and vocabulary rows.

Each operation slices the state dict by the qualified names of the parts the adapter points at, changes the
config keys that describe the new shapes, and rebuilds the model from that config (`rebuild`). Rebuilding
instead of patching modules in place means the in-memory model is exactly what ``from_pretrained`` will
construct from the saved directory: no hidden module attribute can disagree with the config (the failure
mode of hand-patched surgery). The cost is one extra copy of the weights for a moment.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from slimlm.models import FamilyAdapter, Model


def _names(model: Model) -> dict[int, str]:
    return {id(m): n for n, m in model.hf.named_modules()}


def _key(names: dict[int, str], mod: nn.Module, param: str = "weight") -> str:
    return f"{names[id(mod)]}.{param}"


def rebuild(model: Model, sd: dict[str, torch.Tensor], **changes) -> None:
    """Replace ``model.hf`` by a model of the same class built from its config with ``changes``, loaded from ``sd``."""
    old = model.hf
    cfg = copy.deepcopy(old.config)
    for k, v in changes.items():
        setattr(cfg, k, v)
    # a BertModel built without its pooler (add_pooling_layer=False, as tiny:bert is) is rebuilt without it
    kwargs = {"add_pooling_layer": False} if getattr(old, "pooler", True) is None else {}
    with torch.device("meta"):
        new = type(old)(cfg, **kwargs)
    new.to_empty(device="cpu")
    tied = bool(getattr(cfg, "tie_word_embeddings", False)) and new.get_output_embeddings() is not None
    if tied:
        new.get_output_embeddings().weight = new.get_input_embeddings().weight
    missing, unexpected = new.load_state_dict(sd, strict=False)
    out_emb = new.get_output_embeddings()
    allowed = {n for n, p in new.named_parameters(remove_duplicate=False) if tied and out_emb is not None
               and p is out_emb.weight}
    if set(missing) - allowed or unexpected:
        raise RuntimeError(f"surgery produced a state dict that does not fit: missing {missing}, unexpected {unexpected}")
    old_buffers = dict(old.named_buffers())
    persistent = set(sd)
    derived = {f"{n}.embed_scale" for n, m in new.named_modules() if hasattr(m, "scalar_embed_scale")}
    with torch.no_grad():
        for name, buf in new.named_buffers():  # non-persistent buffers (rotary inv_freq, position ids)
            if name in persistent:
                continue
            if name in derived:  # Gemma's sqrt(hidden_size): follows the new config, as from_pretrained does
                buf.fill_(new.get_submodule(name.rsplit(".", 1)[0]).scalar_embed_scale)
                continue
            src = old_buffers.get(name)
            if src is None or src.shape != buf.shape:
                raise RuntimeError(f"cannot carry buffer {name} through surgery")
            buf.copy_(src)
    if getattr(old, "generation_config", None) is not None:
        new.generation_config = copy.deepcopy(old.generation_config)
    new.eval()
    model.hf = new
    model.rehash()


def _state(model: Model) -> dict[str, torch.Tensor]:
    return dict(model.hf.state_dict())


def drop_layers(model: Model, remove: list[int]) -> None:
    """Remove whole blocks and renumber the rest."""
    a = model.adapter
    names = _names(model)
    prefix = names[id(a.layers())]
    keep = [i for i in range(a.num_layers) if i not in set(remove)]
    sd = {}
    for k, v in _state(model).items():
        if k.startswith(prefix + "."):
            idx, rest = k[len(prefix) + 1 :].split(".", 1)
            if int(idx) not in keep:
                continue
            k = f"{prefix}.{keep.index(int(idx))}.{rest}"
        sd[k] = v
    changes: dict = {"num_hidden_layers": len(keep)}
    layer_types = getattr(model.hf.config, "layer_types", None)
    if layer_types:
        changes["layer_types"] = [layer_types[i] for i in keep]
    rebuild(model, sd, **changes)


def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return t.index_select(0, idx).clone()


def _cols(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return t.index_select(1, idx).clone()


def _head_idx(heads: list[int], head_dim: int) -> torch.Tensor:
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])


def _slice_rows(sd: dict, names: dict[int, str], mod: nn.Module, idx: torch.Tensor) -> None:
    sd[_key(names, mod)] = _rows(sd[_key(names, mod)], idx)
    if getattr(mod, "bias", None) is not None:
        sd[_key(names, mod, "bias")] = _rows(sd[_key(names, mod, "bias")], idx)


def _slice_cols(sd: dict, names: dict[int, str], mod: nn.Module, idx: torch.Tensor) -> None:
    sd[_key(names, mod)] = _cols(sd[_key(names, mod)], idx)


def _head_slices(a: FamilyAdapter, names: dict[int, str], sd: dict, keep_q: list[list[int]],
                 keep_kv: list[list[int]]) -> None:
    """In ``sd``: keep the q rows of heads ``keep_q[layer]``, k/v rows of ``keep_kv[layer]``, o columns of ``keep_q``."""
    hd = a.head_dim
    for layer, q_keep, kv_keep in zip(a.layers(), keep_q, keep_kv, strict=True):
        p = a.attention(layer)
        qi, kvi = _head_idx(q_keep, hd), _head_idx(kv_keep, hd)
        for lin, idx in ((p.q, qi), (p.k, kvi), (p.v, kvi)):
            _slice_rows(sd, names, lin, idx)
        _slice_cols(sd, names, p.o, qi)


def _hidden_slices(a: FamilyAdapter, names: dict[int, str], sd: dict, keep: torch.Tensor) -> None:
    """In ``sd``: keep hidden channels ``keep`` in the embeddings, every block's inputs, outputs and norms,
    the final norm and the lm_head."""
    _slice_cols(sd, names, a.embeddings(), keep)
    for layer in a.layers():
        p, m = a.attention(layer), a.mlp(layer)
        for lin in (p.q, p.k, p.v, m.gate, m.up):
            if lin is not None:
                _slice_cols(sd, names, lin, keep)
        _slice_rows(sd, names, p.o, keep)
        _slice_rows(sd, names, m.down, keep)
        for norm in a.norms(layer):
            _slice_rows(sd, names, norm, keep)
    if a.final_norm() is not None:
        _slice_rows(sd, names, a.final_norm(), keep)
    head = a.lm_head()
    if head is not None:
        _slice_cols(sd, names, head, keep)


def slice_heads(model: Model, keep_q: list[list[int]], keep_kv: list[list[int]]) -> None:
    """Keep query heads ``keep_q[layer]`` and KV heads ``keep_kv[layer]`` (same counts in every layer).

    The caller keeps each kept query head's KV group among ``keep_kv`` and lists the query heads group by
    group, so that query head j of the new layer still reads KV head j // (heads / kv_heads).
    """
    a = model.adapter
    sd = _state(model)
    _head_slices(a, _names(model), sd, keep_q, keep_kv)
    rebuild(model, sd, num_attention_heads=len(keep_q[0]), num_key_value_heads=len(keep_kv[0]), head_dim=a.head_dim)


def slice_ffn(model: Model, keep: list[torch.Tensor]) -> None:
    """Keep FFN channels ``keep[layer]`` (sorted indices, the same count in every layer)."""
    a = model.adapter
    names = _names(model)
    sd = _state(model)
    for layer, idx in zip(a.layers(), keep, strict=True):
        m = a.mlp(layer)
        for lin in (m.gate, m.up):
            if lin is None:
                continue
            sd[_key(names, lin)] = _rows(sd[_key(names, lin)], idx)
            if lin.bias is not None:
                sd[_key(names, lin, "bias")] = _rows(sd[_key(names, lin, "bias")], idx)
        sd[_key(names, m.down)] = _cols(sd[_key(names, m.down)], idx)
    rebuild(model, sd, intermediate_size=len(keep[0]))


def slice_hidden(model: Model, keep: torch.Tensor) -> None:
    """Keep hidden channels ``keep`` everywhere: embeddings, every block's inputs and outputs, norms, lm_head."""
    a = model.adapter
    sd = _state(model)
    names = _names(model)
    _hidden_slices(a, names, sd, keep)
    head = a.lm_head()
    if a.scaled_embeddings and (head is None or head.weight is not a.embeddings().weight):
        # Gemma multiplies the embeddings by sqrt(hidden_size): keep their scale in the residual stream.
        # A tied matrix is left alone (rescaling it would rescale the logits too).
        key = _key(names, a.embeddings())
        sd[key] = sd[key] * (a.hidden_size / len(keep)) ** 0.5
    rebuild(model, sd, hidden_size=len(keep), head_dim=a.head_dim)


def slice_bert_width(model: Model, keep_heads: list[list[int]], keep_hidden: torch.Tensor) -> None:
    """BERT: keep heads ``keep_heads[layer]`` and hidden channels ``keep_hidden`` in one rebuild.

    The config derives the head size as hidden_size / num_attention_heads, so the two can only change
    together, with ``len(keep_hidden) == kept heads x head size``; in between, the model would not match
    its config. Besides what the shared hidden slicing covers, BERT's hidden width also runs through the
    position and token-type embeddings, the embeddings LayerNorm, the pooler and the classifier's inputs.
    """
    a = model.adapter
    hd = a.head_dim
    if len(keep_hidden) != len(keep_heads[0]) * hd:
        raise ValueError(f"BERT keeps {len(keep_heads[0])} heads of {hd}: keep {len(keep_heads[0]) * hd} hidden "
                         f"channels, not {len(keep_hidden)}")
    names = _names(model)
    sd = _state(model)
    _head_slices(a, names, sd, keep_heads, keep_heads)
    _hidden_slices(a, names, sd, keep_hidden)
    emb = a.base().embeddings
    _slice_cols(sd, names, emb.position_embeddings, keep_hidden)
    _slice_cols(sd, names, emb.token_type_embeddings, keep_hidden)
    _slice_rows(sd, names, emb.LayerNorm, keep_hidden)
    pooler = getattr(a.base(), "pooler", None)
    if pooler is not None:
        _slice_rows(sd, names, pooler.dense, keep_hidden)
        _slice_cols(sd, names, pooler.dense, keep_hidden)
    if a.classifier() is not None:
        _slice_cols(sd, names, a.classifier(), keep_hidden)
    rebuild(model, sd, num_attention_heads=len(keep_heads[0]), hidden_size=len(keep_hidden))


def slice_vocab(model: Model, keep: torch.Tensor, remap: dict[int, int]) -> None:
    """Keep vocabulary rows ``keep`` (old ids, sorted) in the embeddings and lm_head; remap special ids."""
    a = model.adapter
    names = _names(model)
    sd = _state(model)
    emb = a.embeddings()
    sd[_key(names, emb)] = _rows(sd[_key(names, emb)], keep)
    head = a.lm_head()
    if head is not None:
        sd[_key(names, head)] = _rows(sd[_key(names, head)], keep)
        if head.bias is not None:
            sd[_key(names, head, "bias")] = _rows(sd[_key(names, head, "bias")], keep)
    changes = {"vocab_size": len(keep)}
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        if hasattr(model.hf.config, attr):
            changes[attr] = _remap(getattr(model.hf.config, attr), remap)
    gen = getattr(model.hf, "generation_config", None)
    rebuild(model, sd, **changes)
    if gen is None:
        return
    new_gen = copy.deepcopy(gen)
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        if getattr(new_gen, attr, None) is not None:
            setattr(new_gen, attr, _remap(getattr(new_gen, attr), remap))
    model.hf.generation_config = new_gen


def _remap(value, remap: dict[int, int]):
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [remap[v] for v in value if v in remap]
    return remap.get(value)
