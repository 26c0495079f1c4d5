"""Family adapters: where the parts of a transformer live, so methods never branch on model classes.

An adapter answers structural questions (layers, attention projections, heads / KV heads / head_dim, MLP
projections, norms, embeddings, lm_head) and names the config keys that surgery must change. Pruning,
quantization and distillation talk to the adapter, not to ``LlamaDecoderLayer`` or ``BertLayer``; adding a
family means adding one adapter here and registering it in ``ADAPTERS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from slimlm.errors import UnsupportedModelError


@dataclass(frozen=True)
class AttentionParts:
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear


@dataclass(frozen=True)
class MLPParts:
    """``gate`` is None for a plain two-matrix MLP (BERT); ``up`` then feeds the activation."""

    up: nn.Linear
    down: nn.Linear
    gate: nn.Linear | None = None


class FamilyAdapter:
    """Base adapter. Subclasses declare the model types they handle and how to reach each part."""

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    causal: ClassVar[bool]
    #: norms compute ``(norm_offset + weight) * normalized(x)``: 0 for Llama/BERT, 1 for Gemma
    norm_offset: ClassVar[float] = 0.0
    #: the input embeddings are multiplied by sqrt(hidden_size) (Gemma), which hidden-width surgery changes
    scaled_embeddings: ClassVar[bool] = False

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    # -- shape facts -------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers())

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def num_kv_heads(self) -> int:
        return getattr(self.config, "num_key_value_heads", None) or self.num_heads

    @property
    def head_dim(self) -> int:
        return getattr(self.config, "head_dim", None) or self.hidden_size // self.num_heads

    @property
    def intermediate_size(self) -> int:
        return self.config.intermediate_size

    @property
    def vocab_size(self) -> int:
        return self.embeddings().num_embeddings  # nn.Embedding and slimlm.quantize's Int8Embedding both have it

    @property
    def max_positions(self) -> int:
        return int(getattr(self.config, "max_position_embeddings", 0) or 0)

    # -- parts -------------------------------------------------------------------------------------
    def base(self) -> nn.Module:
        raise NotImplementedError

    def layers(self) -> nn.ModuleList:
        raise NotImplementedError

    def attention(self, layer: nn.Module) -> AttentionParts:
        raise NotImplementedError

    def mlp(self, layer: nn.Module) -> MLPParts:
        raise NotImplementedError

    def norms(self, layer: nn.Module) -> list[nn.Module]:
        raise NotImplementedError

    def final_norm(self) -> nn.Module | None:
        raise NotImplementedError

    def embeddings(self) -> nn.Embedding:
        raise NotImplementedError

    def lm_head(self) -> nn.Linear | None:
        return None

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The logits the model computes from its final hidden states: its LM head, then the soft-capping of
        families that have one (Gemma 2: ``cap * tanh(logits / cap)``)."""
        logits = self.lm_head()(hidden)
        cap = getattr(self.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def smoothing_pairs(self, layer: nn.Module) -> list[tuple[nn.Module, list[nn.Linear]]]:
        """``(producer, consumers)`` pairs where scaling the producer's output channels by ``1/s`` and the
        consumers' input columns by ``s`` leaves the model's function unchanged (SmoothQuant, AWQ).
        The producer is a norm with a per-channel ``weight`` or a Linear whose output rows feed the
        consumers' input columns one to one. Empty where the family has no such pairs (post-norm BERT)."""
        return []

    def block_linears(self) -> dict[str, nn.Linear]:
        """Every Linear inside the transformer blocks, by qualified name (no embeddings, no head)."""
        prefix = {id(m): n for n, m in self.model.named_modules()}
        out: dict[str, nn.Linear] = {}
        for layer in self.layers():
            for name, mod in layer.named_modules():
                if isinstance(mod, nn.Linear):
                    out[f"{prefix[id(layer)]}.{name}"] = mod
        return out

    def describe(self) -> dict:
        return {
            "family": self.family,
            "model_type": self.config.model_type,
            "layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "heads": self.num_heads,
            "kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
        }


class LlamaAdapter(FamilyAdapter):
    """Llama-like decoders (Llama, SmolLM, Mistral, Qwen2 with its q/k/v biases, Qwen3 with its per-head q/k
    norms, and Phi-3 once its fused projections are split on load): pre-norm, GQA, gated MLP."""

    family = "llama"
    model_types = ("llama", "mistral", "qwen2", "qwen3")
    causal = True

    def base(self) -> nn.Module:
        return self.model.model if hasattr(self.model, "model") else self.model

    def layers(self) -> nn.ModuleList:
        return self.base().layers

    def attention(self, layer: nn.Module) -> AttentionParts:
        a = layer.self_attn
        return AttentionParts(q=a.q_proj, k=a.k_proj, v=a.v_proj, o=a.o_proj)

    def mlp(self, layer: nn.Module) -> MLPParts:
        m = layer.mlp
        return MLPParts(gate=m.gate_proj, up=m.up_proj, down=m.down_proj)

    def norms(self, layer: nn.Module) -> list[nn.Module]:
        return [layer.input_layernorm, layer.post_attention_layernorm]

    def final_norm(self) -> nn.Module | None:
        return self.base().norm

    def embeddings(self) -> nn.Embedding:
        return self.base().embed_tokens

    def lm_head(self) -> nn.Linear | None:
        return getattr(self.model, "lm_head", None)

    def smoothing_pairs(self, layer: nn.Module) -> list[tuple[nn.Module, list[nn.Linear]]]:
        a, m = self.attention(layer), self.mlp(layer)
        pairs = [(layer.input_layernorm, [a.q, a.k, a.v]), (layer.post_attention_layernorm, [m.gate, m.up]),
                 (m.up, [m.down])]  # down reads act(gate) * up: scaling up's rows scales down's input
        if self.num_kv_heads == self.num_heads:  # o reads v's channels one to one only without GQA
            pairs.append((a.v, [a.o]))
        return pairs


class GemmaAdapter(LlamaAdapter):
    """Gemma 2 / Gemma 3 text decoders: Llama's layout plus a norm after attention and around the MLP
    (four per block, each scaling by ``1 + weight``), embeddings scaled by sqrt(hidden_size), soft-capped
    logits, alternating sliding-window layers and (Gemma 3) per-head q/k norms."""

    family = "gemma"
    model_types = ("gemma2", "gemma3_text")
    norm_offset = 1.0
    scaled_embeddings = True

    def norms(self, layer: nn.Module) -> list[nn.Module]:
        return [layer.input_layernorm, layer.post_attention_layernorm, layer.pre_feedforward_layernorm,
                layer.post_feedforward_layernorm]

    def smoothing_pairs(self, layer: nn.Module) -> list[tuple[nn.Module, list[nn.Linear]]]:
        # post_attention_layernorm normalises attention's output before the residual add; the MLP reads
        # pre_feedforward_layernorm
        a, m = self.attention(layer), self.mlp(layer)
        pairs = [(layer.input_layernorm, [a.q, a.k, a.v]), (layer.pre_feedforward_layernorm, [m.gate, m.up]),
                 (m.up, [m.down])]
        if self.num_kv_heads == self.num_heads:
            pairs.append((a.v, [a.o]))
        return pairs


class BertAdapter(FamilyAdapter):
    """BERT-like encoders (BERT, MiniLM): post-norm, MHA, two-matrix GELU MLP, optional classifier."""

    family = "bert"
    model_types = ("bert",)
    causal = False

    def base(self) -> nn.Module:
        return self.model.bert if hasattr(self.model, "bert") else self.model

    def layers(self) -> nn.ModuleList:
        return self.base().encoder.layer

    def attention(self, layer: nn.Module) -> AttentionParts:
        a = layer.attention
        return AttentionParts(q=a.self.query, k=a.self.key, v=a.self.value, o=a.output.dense)

    def mlp(self, layer: nn.Module) -> MLPParts:
        return MLPParts(up=layer.intermediate.dense, down=layer.output.dense)

    def norms(self, layer: nn.Module) -> list[nn.Module]:
        return [layer.attention.output.LayerNorm, layer.output.LayerNorm]

    def final_norm(self) -> nn.Module | None:
        return None

    def embeddings(self) -> nn.Embedding:
        return self.base().embeddings.word_embeddings

    def classifier(self) -> nn.Linear | None:
        return getattr(self.model, "classifier", None)


ADAPTERS: tuple[type[FamilyAdapter], ...] = (LlamaAdapter, GemmaAdapter, BertAdapter)
#: architectures converted on load to one an adapter handles (see slimlm.models.convert)
CONVERTED = {"phi3": "mistral"}
SUPPORTED = ", ".join([t for a in ADAPTERS for t in a.model_types] + list(CONVERTED))
CAUSAL_TYPES = tuple(t for a in ADAPTERS if a.causal for t in a.model_types) + tuple(CONVERTED)


def adapter_for(model: nn.Module) -> FamilyAdapter:
    """Return the adapter for ``model`` or fail with the list of supported architectures."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls(model)
    raise UnsupportedModelError(
        f"architecture {model_type!r} is not supported; slimlm supports model types: {SUPPORTED}."
    )
