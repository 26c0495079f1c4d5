"""Architecture conversions done at load time, so every method sees one layout per family.

Phi-3 is a Mistral-style decoder (pre-norm RMSNorm, GQA, gated SiLU MLP, RoPE, optional sliding window)
whose q/k/v and gate/up projections are fused into one matrix each. Splitting them gives a
``MistralForCausalLM`` with the same function, on which structured surgery (heads, FFN channels, hidden
width), SmoothQuant pairs and every exporter work unchanged; the trade-off is that a Phi-3 variant is
saved as a Mistral model (``model_type: mistral``), which plain transformers, llama.cpp, ONNX Runtime and
OpenVINO all load. Phi-3 variants whose rotary embedding is partial (Phi-4-mini) or long-context scaled
(``longrope``: Phi-3.5, the 128k models) have no Mistral equivalent and are refused before any weights are
read.
"""

from __future__ import annotations

import torch
from torch import nn

from slimlm.errors import UnsupportedModelError


def phi3_refusal(config: dict) -> str | None:
    """Why a Phi-3 config (as a dict from config.json or a GGUF header) cannot be converted, or None."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    partial = rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)) or 1.0
    rope_type = rope.get("rope_type", rope.get("type", "default")) or "default"
    if float(partial) != 1.0:
        return f"partial rotary embeddings (partial_rotary_factor={partial})"
    if rope_type != "default":
        return f"rope scaling {rope_type!r}"
    return None


@torch.no_grad()
def phi3_to_mistral(model: nn.Module) -> nn.Module:
    """Return a ``MistralForCausalLM`` computing the same function as the ``Phi3ForCausalLM`` ``model``.

    Raises:
        UnsupportedModelError: the Phi-3 variant uses partial or scaled rotary embeddings.
    """
    from transformers import MistralConfig, MistralForCausalLM

    c = model.config
    why = phi3_refusal(c.to_dict())
    if why:
        raise UnsupportedModelError(
            f"this Phi-3 model uses {why}, which slimlm does not support; supported Phi-3 models have full "
            "rotary embeddings without rope scaling (e.g. Phi-3-mini-4k)."
        )
    rope = dict(getattr(c, "rope_parameters", None) or {})
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    cfg = MistralConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, head_dim=head_dim, hidden_act=c.hidden_act,
        max_position_embeddings=c.max_position_embeddings, rms_norm_eps=c.rms_norm_eps,
        rope_theta=rope.get("rope_theta", getattr(c, "rope_theta", 10000.0)),
        sliding_window=getattr(c, "sliding_window", None), tie_word_embeddings=c.tie_word_embeddings,
        bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id,
    )
    q_out, kv_out = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("self_attn.qkv_proj.weight"):
            base = k[: -len("qkv_proj.weight")]
            q, kk, vv = v.split([q_out, kv_out, kv_out], dim=0)
            sd.update({base + "q_proj.weight": q, base + "k_proj.weight": kk, base + "v_proj.weight": vv})
        elif k.endswith("mlp.gate_up_proj.weight"):
            gate, up = v.chunk(2, dim=0)  # Phi3MLP: gate, up = gate_up(x).chunk(2); y = down(up * act(gate))
            base = k[: -len("gate_up_proj.weight")]
            sd.update({base + "gate_proj.weight": gate, base + "up_proj.weight": up})
        else:
            sd[k] = v
    new = MistralForCausalLM(cfg)
    new.load_state_dict({k: t.clone() for k, t in sd.items()}, strict=not cfg.tie_word_embeddings)
    if cfg.tie_word_embeddings:
        new.tie_weights()
    if getattr(model, "generation_config", None) is not None:
        new.generation_config = model.generation_config
    return new.to(next(model.parameters()).dtype).eval()
