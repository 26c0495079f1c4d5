"""GGUF for llama.cpp, written with the ``gguf`` package (llama.cpp's own writer library).

What llama.cpp's converter does for these architectures, done from the in-memory variant so that pruned
(fewer layers, heads, FFN channels, a narrower hidden width), vocabulary-trimmed and distilled variants
convert with their own shapes: tensor names from gguf's name map, the architecture's hyper-parameters
(``attention.key_length`` carries a head size that no longer equals hidden/heads after width pruning),
Llama's q/k rows permuted to llama.cpp's rotary layout, Gemma's norms stored as ``1 + weight``, and the
tokenizer as llama.cpp reads it (`tokenizer_kind`: byte-level BPE with its merges and pre-tokenizer, or a
SentencePiece-style vocabulary with scores and byte tokens) with its special ids.

Types: ``f32``, ``f16``, ``bf16`` and the block types gguf can quantize in Python: ``q8_0``, ``q5_0``,
``q5_1``, ``q4_0``, ``q4_1``. A 2-D tensor whose rows are not a multiple of the 32-wide block is written
as f16 (llama.cpp's converter does the same), 1-D tensors (norms, biases) stay f32, and with the 4/5-bit
types the embedding and output matrices are written as q8_0 (llama.cpp's quantizer also keeps them wider:
on SmolLM2-135M, whose tied 49k x 576 matrix is both, q4_0 everywhere costs +37% perplexity), except in
``q4_0`` a matrix that a slimlm int4 layer already holds on Q4_0's grid (`q4_0_grid_weights`). K-quants
(``q4_k_s``, ``q4_k_m``, ``q5_k_s``, ``q5_k_m``, ``q6_k``) need llama.cpp (gguf has no Python quantizer for
them): each tensor's type is chosen by `kquant_type`, a port of llama.cpp's own mix rules for these types
(``llama_tensor_get_type`` in ``llama-quant.cpp``, no importance matrix), and quantized by llama.cpp's
``ggml_quantize_chunk`` (`slimlm.export.llamacpp.quantize_rows`), so the file is what ``llama-quantize``
writes from an F32 GGUF. K-quant blocks are 256 wide: a tensor whose rows are not a multiple of 256 falls
back as llama.cpp's does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then F16 below a multiple of 32). On
SmolLM2-135M (hidden 576 = 2.25 x 256) only ffn_down (1536 wide) can be a K-quant; pruned widths should be
multiples of 256 to get the K-quant everywhere.

Importance matrix (`importance_matrix`, `slimlm.export.export`'s ``data_aware``): with llama.cpp installed, the
4/5-bit and K-quant blocks are quantized by ``ggml_quantize_chunk`` weighted by each linear's mean squared
input per column on calibration text, as ``llama-imatrix`` + ``llama-quantize --imatrix`` do; the mix
rules stay the ones above (for these types llama.cpp's do not depend on it).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from slimlm.errors import ConfigError

#: our model type -> gguf architecture name
ARCHS = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2",
         "gemma3_text": "gemma3"}
#: llama.cpp's K-quant mixes: name -> the mix's base type
KQUANTS = {"q4_k_s": "Q4_K", "q4_k_m": "Q4_K", "q5_k_s": "Q5_K", "q5_k_m": "Q5_K", "q6_k": "Q6_K"}
TYPES = ("f32", "f16", "bf16", "q8_0", "q5_0", "q5_1", "q4_0", "q4_1", *KQUANTS)
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}  # llama.cpp's, for rows not a multiple of 256


def kquant_type(precision: str, name: str, ncols: int, n_layer: int, has_output: bool) -> str:
    """The ggml type llama.cpp's quantizer gives the 2-D GGUF tensor ``name`` in the K-quant mix ``precision``.

    A port of ``llama_tensor_get_type`` (llama.cpp's ``llama-quant.cpp``) for the mixes in `KQUANTS`, dense
    models, no importance matrix: the output matrix (the embedding when there is no separate output) in Q6_K
    (Q8_0 when its rows do not fit a 256 block); in the ``_m`` mixes attn_v and ffn_down in Q6_K in the first
    and last eighth of the layers and every third layer between; in ``q4_k_s`` attn_v of the first 4 layers
    and ffn_down of the first eighth in Q5_K; everything else in the base type; then the 256-block fallback.

    Args:
        precision: a `KQUANTS` name.
        name: the GGUF tensor name (``blk.3.attn_v.weight``).
        ncols: the tensor's row length (its last numpy dimension).
        n_layer: the number of blocks.
        has_output: whether the file has a separate ``output.weight``.

    Returns:
        A ``gguf.GGMLQuantizationType`` name, e.g. ``"Q6_K"``.
    """
    t = KQUANTS[precision]
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1

    def more_bits(i: int) -> bool:
        return i < n_layer // 8 or i >= 7 * n_layer // 8 or (i - n_layer // 8) % 3 == 2

    if name == "output.weight" or (not has_output and name == "token_embd.weight"):
        return "Q6_K" if ncols % 256 == 0 else "Q8_0" if ncols % 32 == 0 else "F16"
    if name.endswith(("attn_v.weight", "ffn_down.weight")) and precision.endswith("_m") and more_bits(layer):
        t = "Q6_K"
    elif precision == "q4_k_s" and (name.endswith("attn_v.weight") and layer < 4
                                    or name.endswith("ffn_down.weight") and layer < n_layer // 8):
        t = "Q5_K"
    if ncols % 256:
        t = "F16" if ncols % 32 else _FALLBACK[t]
    return t


def _qtype(name: str):
    import gguf

    return {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
            "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0,
            "q5_0": gguf.GGMLQuantizationType.Q5_0, "q5_1": gguf.GGMLQuantizationType.Q5_1,
            "q4_0": gguf.GGMLQuantizationType.Q4_0, "q4_1": gguf.GGMLQuantizationType.Q4_1}[name]


def file_type_of(path: str | Path) -> str:
    """A GGUF file's type as slimlm names it (``q4_1``, ``q4_k_m``, ``f16``...), from ``general.file_type``;
    ``unknown`` when the file does not say."""
    import gguf

    field = gguf.GGUFReader(str(path)).fields.get("general.file_type")
    if field is None:
        return "unknown"
    try:
        name = gguf.LlamaFileType(int(field.parts[field.data[0]][0])).name
    except ValueError:
        return "unknown"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()


def _file_type(name: str):
    import gguf

    return {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
            "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
            "q5_0": gguf.LlamaFileType.MOSTLY_Q5_0, "q5_1": gguf.LlamaFileType.MOSTLY_Q5_1,
            "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1,
            **{k: gguf.LlamaFileType[f"MOSTLY_{k.upper()}"] for k in KQUANTS}}[name]


def check_supported(hf, precision: str) -> str:
    """The gguf architecture name for ``hf``, or a `ConfigError` naming what is supported."""
    mt = hf.config.model_type
    if mt not in ARCHS:
        raise ConfigError(f"GGUF export supports model types {', '.join(ARCHS)}; this model is {mt!r} "
                          "(export it to onnx or openvino instead).")
    if precision not in TYPES:
        raise ConfigError(f"GGUF type {precision!r} is not one slimlm writes; use one of {', '.join(TYPES)}.")
    if precision in KQUANTS:
        from slimlm.export import llamacpp

        if not llamacpp.available():
            raise ConfigError(f"GGUF {precision} is quantized by llama.cpp, which is not installed; "
                              f"{llamacpp.INSTALL}.")
    c = hf.config
    out = hf.get_output_embeddings()
    if mt == "gemma2" and out is not None and out.weight is not hf.get_input_embeddings().weight:
        raise ConfigError("llama.cpp's Gemma 2 has no separate output matrix; this variant has an untied lm_head.")
    width = c.num_attention_heads * (getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
    if mt == "qwen2" and width != c.hidden_size:
        raise ConfigError(f"llama.cpp's qwen2 sizes attn_q and attn_output hidden x hidden; this variant's heads x "
                          f"head_dim is {width}, its hidden size {c.hidden_size} (prune heads and hidden by the "
                          "same fraction, or export to onnx or openvino).")
    if mt.startswith("gemma"):
        from slimlm.models.loading import GEMMA_27B_BLOCKS

        big = c.num_hidden_layers == GEMMA_27B_BLOCKS[ARCHS[mt]]  # llama.cpp's 27B: hidden / heads
        scalar = c.hidden_size // c.num_attention_heads if big else c.head_dim
        if c.query_pre_attn_scalar != scalar:
            raise ConfigError(
                f"llama.cpp scales this Gemma's attention by {'hidden / heads' if big else 'head_dim'} ({scalar}); "
                f"this model uses query_pre_attn_scalar={c.query_pre_attn_scalar}, which GGUF cannot express.")
    if mt == "gemma3_text" and list(c.layer_types) != [
            "full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(c.num_hidden_layers)]:
        raise ConfigError("llama.cpp's Gemma 3 puts a global-attention layer every 6th layer; this variant's "
                          "layers (after layer pruning) do not follow that pattern, which GGUF cannot express.")
    if mt != "gemma3_text" and getattr(c, "rope_parameters", {}).get("rope_type", "default") != "default":
        raise ConfigError("GGUF export supports the default rotary embedding only (no rope scaling).")
    return ARCHS[mt]


def _permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF's rotate-half q/k rows -> llama.cpp's interleaved rotary layout (as llama.cpp's converter does)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


#: pre-tokenizer split patterns of common byte-level BPE tokenizers -> llama.cpp's name for that pre-tokenizer
_SPLIT_PRE = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+":
        "qwen2",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+":
        "llama-bpe",
}


def _steps(node: dict | None) -> list[dict]:
    """A tokenizer.json normalizer / pre-tokenizer as a flat list of its steps."""
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [s for child in node.get("normalizers", node.get("pretokenizers", [])) for s in _steps(child)]
    return [node]


def tokenizer_kind(j: dict) -> dict:
    """How llama.cpp must read the tokenizer of ``tokenizer.json`` ``j``, as its converter writes it:

    - SentencePiece-style BPE (``byte_fallback``, spaces as ``\u2581``: Llama 2, Mistral, Gemma, Phi-3):
      llama.cpp's ``llama`` vocabulary, which merges the pair whose token scores highest (scores from the
      merge ranks, so it merges in BPE's order) and falls back to ``<0xNN>`` byte tokens; ``add_space_prefix``
      when the tokenizer prepends ``\u2581`` to the text.
    - byte-level BPE (GPT-2, SmolLM, Qwen, Llama 3): ``gpt2`` with the pre-tokenizer that splits the text as
      the tokenizer does (``pre``): ``gpt-2`` for the plain byte-level regex, ``smollm`` with single digits
      split first, ``qwen2`` / ``llama-bpe`` for those split patterns, else ``default`` (the export's
      tokenizer check then says whether llama.cpp agrees).
    """
    m = j["model"]
    if m["type"] != "BPE":
        raise ConfigError(f"GGUF export writes BPE tokenizers; this one is {m['type']}.")
    norms, pres = _steps(j.get("normalizer")), _steps(j.get("pre_tokenizer"))
    if m.get("byte_fallback"):
        prefix = any(n.get("type") == "Prepend" for n in norms) or any(
            p.get("type") == "Metaspace" and p.get("prepend_scheme", "always" if p.get("add_prefix_space", True)
                                                 else "never") != "never" for p in pres)
        return {"model": "llama", "pre": None, "add_space_prefix": bool(prefix)}
    kinds = [p.get("type") for p in pres]
    pre = "default"
    if kinds == ["ByteLevel"] and pres[0].get("use_regex", True):
        pre = "gpt-2"
    elif kinds == ["Digits", "ByteLevel"] and pres[0].get("individual_digits") and pres[1].get("use_regex", True):
        pre = "smollm"
    elif kinds == ["Split", "ByteLevel"] and not pres[1].get("use_regex", True):
        pre = _SPLIT_PRE.get((pres[0].get("pattern") or {}).get("Regex"), "default")
    return {"model": "gpt2", "pre": pre, "add_space_prefix": False}


def _vocab(tokenizer, vocab_size: int) -> tuple[list[str], list[int], list[float], list[str], dict]:
    """Tokens, token types, scores and merges for GGUF, and `tokenizer_kind`'s reading of the tokenizer."""
    import gguf

    j = json.loads(tokenizer.backend_tokenizer.to_str())
    kind = tokenizer_kind(j)
    spm = kind["model"] == "llama"
    vocab = j["model"]["vocab"]
    inv = {i: t for t, i in vocab.items()}
    added = {t["id"]: t for t in j.get("added_tokens", [])}
    for i, t in added.items():
        inv[i] = t["content"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"].get("merges", [])]
    rank = {}  # SentencePiece-style: the token a merge makes scores -rank (llama.cpp merges the highest first)
    for r, mg in enumerate(j["model"].get("merges", [])):
        rank.setdefault("".join(mg) if isinstance(mg, list) else mg.replace(" ", "", 1), r)
    unk = j["model"].get("unk_token")
    tokens, types, scores = [], [], []
    for i in range(vocab_size):
        if i not in inv:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added and inv[i] != unk:
            tokens.append(inv[i])
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            t = inv[i]
            tokens.append(t)
            if spm and t == unk:
                types.append(gguf.TokenType.UNKNOWN)
            elif spm and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                types.append(gguf.TokenType.BYTE)
            else:
                types.append(gguf.TokenType.NORMAL)
        # a token no merge makes (a character, a byte, a special) scores below every merged one
        scores.append(-float(rank.get(tokens[-1], len(merges))) if spm else 0.0)
    return tokens, types, scores, [] if spm else merges, kind


def _hparams(w, arch: str, c, a) -> None:
    w.add_context_length(int(c.max_position_embeddings))
    w.add_embedding_length(a.hidden_size)
    w.add_block_count(a.num_layers)
    w.add_feed_forward_length(a.intermediate_size)
    w.add_head_count(a.num_heads)
    w.add_head_count_kv(a.num_kv_heads)
    w.add_key_length(a.head_dim)
    w.add_value_length(a.head_dim)
    w.add_layer_norm_rms_eps(float(c.rms_norm_eps))
    rope = getattr(c, "rope_parameters", None) or {}
    if arch == "gemma3":
        rope = rope.get("full_attention", rope)
    theta = rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    w.add_rope_freq_base(float(theta))
    w.add_rope_dimension_count(a.head_dim)
    w.add_vocab_size(a.vocab_size)
    if arch in ("gemma2", "gemma3"):
        if getattr(c, "sliding_window", None):
            w.add_sliding_window(int(c.sliding_window))
        if getattr(c, "attn_logit_softcapping", None):
            w.add_attn_logit_softcapping(float(c.attn_logit_softcapping))
        if getattr(c, "final_logit_softcapping", None):
            w.add_final_logit_softcapping(float(c.final_logit_softcapping))


#: the types whose llama.cpp quantizer takes an importance matrix (Q8_0 and the float types ignore one)
IMATRIX_TYPES = ("q5_0", "q5_1", "q4_0", "q4_1", *KQUANTS)


def importance_matrix(hf, tokens: torch.Tensor) -> dict[str, np.ndarray]:
    """llama-imatrix's statistic for every ``nn.Linear`` of ``hf``: the mean squared input activation per
    column over the calibration ``tokens`` (``(n, seq_len)`` ids), keyed by its weight's state-dict name."""
    from slimlm.calibration import InputStats, run_batches

    linears = {name: m for name, m in hf.named_modules() if isinstance(m, torch.nn.Linear)}
    with torch.inference_mode(), InputStats(linears, norms=True) as stats:
        run_batches(hf, tokens)
    return {f"{name}.weight": (stats.norm(name).pow(2) / stats.tokens(name)).float().numpy() for name in linears
            if name in stats.key}


def q4_0_grid_weights(hf) -> set[str]:
    """State-dict names of the weights that slimlm int4 layers hold on llama.cpp's Q4_0 grid (``symmetric``,
    groups of 32, `slimlm.quantize.Int4WeightConfig`), a tied int4 table included. Q4_0 reproduces them
    exactly, so ``q4_0`` writes them as Q4_0 without an importance matrix, the vocabulary matrix too: its
    quality is the variant's, already measured, where re-quantizing a float one to Q4_0 would cost more."""
    from slimlm.models.qlayers import Int4Embedding, Int4WeightLinear

    return {f"{n}.weight" for n, m in hf.named_modules()
            if isinstance(m, (Int4WeightLinear, Int4Embedding)) and m.symmetric and m.group_size == 32}


def write_gguf(model, hf, path: Path, precision: str, imatrix: dict[str, np.ndarray] | None = None) -> dict:
    """Write ``hf`` (fp32 weights; the model's tokenizer) to ``path`` as GGUF of type ``precision``.

    ``imatrix`` (`importance_matrix`): with the 4/5-bit and K-quant types, each 2-D tensor that has one is
    quantized by llama.cpp's ``ggml_quantize_chunk`` weighted by it (needs llama.cpp); without, the plain
    types use gguf's Python quantizer (round to nearest, as ``llama-quantize`` without ``--imatrix``).
    """
    import gguf

    arch = check_supported(hf, precision)
    a = model.adapter.__class__(hf)
    c = hf.config
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], a.num_layers)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(Path(str(model.spec)).name or "slimlm-variant")
    w.add_file_type(_file_type(precision))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _hparams(w, arch, c, a)
    tokens, types, scores, merges, reading = _vocab(model.tokenizer, a.vocab_size)
    w.add_tokenizer_model(reading["model"])
    if reading["pre"]:
        w.add_tokenizer_pre(reading["pre"])
    if reading["model"] == "llama":
        w.add_add_space_prefix(reading["add_space_prefix"])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores(scores)  # byte-level BPE has none (zeros: some readers expect the key)
    with tempfile.TemporaryDirectory() as tmp:
        model.tokenizer.save_pretrained(tmp)
        special = gguf.SpecialVocab(tmp, load_merges=False, n_vocab=len(tokens))
    special.merges = merges
    for key in ("bos", "eos", "pad", "unk"):  # the config's ids are the ones the model was trained with
        tid = getattr(c, f"{key}_token_id", None)
        if isinstance(tid, int):
            special.special_token_ids[key] = tid
    special.add_to_gguf(w, quiet=True)

    qtype = None if precision in KQUANTS else _qtype(precision)
    on_grid = q4_0_grid_weights(model.hf) if precision == "q4_0" else set()
    tied = hf.get_output_embeddings() is None or hf.get_output_embeddings().weight is hf.get_input_embeddings().weight
    has_output = not (tied or arch == "gemma2") and hf.get_output_embeddings() is not None
    counts: dict[str, int] = {}
    fallback: list[str] = []  # K-quant mixes: 2-D tensors whose rows do not fit the 256-wide K-quant block
    weighted = 0  # tensors quantized with the importance matrix
    exact = 0  # tensors already on the Q4_0 grid
    for name, t in hf.state_dict().items():
        if name == "lm_head.weight" and (tied or arch == "gemma2"):
            continue
        if name.endswith(("rotary_emb.inv_freq", "embed_scale")):
            continue
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ConfigError(f"GGUF export does not know where tensor {name} goes for {arch}.")
        t = t.detach().float()
        if arch == "llama" and name.endswith("q_proj.weight"):
            t = _permute(t, a.num_heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            t = _permute(t, a.num_kv_heads)
        if arch in ("gemma2", "gemma3") and name.endswith("norm.weight"):
            t = t + 1.0  # llama.cpp's RMSNorm multiplies by the stored weight; Gemma's by (1 + weight)
        data = t.numpy()
        imp = imatrix.get(name) if imatrix and data.ndim == 2 else None
        if precision in KQUANTS:  # llama.cpp's mix and quantizer
            from slimlm.export.llamacpp import quantize_rows

            kind = gguf.GGMLQuantizationType.F32
            if data.ndim == 2:
                kind = gguf.GGMLQuantizationType[kquant_type(precision, new, data.shape[1], a.num_layers, has_output)]
                if data.shape[1] % 256:
                    fallback.append(new)
            if kind not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                counts[kind.name] = counts.get(kind.name, 0) + 1
                w.add_tensor(new, quantize_rows(data, kind, imp), raw_dtype=kind)
                weighted += imp is not None
                continue
        else:
            kind = qtype
        if name in on_grid:  # already Q4_0's values: written as they are (an importance matrix would move them)
            imp = None
            exact += 1
        elif new in ("token_embd.weight", "output.weight") and precision in ("q4_0", "q4_1", "q5_0", "q5_1"):
            kind = gguf.GGMLQuantizationType.Q8_0  # as llama.cpp's quantizer: the vocabulary matrices stay wider
        if data.ndim == 1 or kind == gguf.GGMLQuantizationType.F32:
            kind = gguf.GGMLQuantizationType.F32
            data = data.astype(np.float32)
        elif kind == gguf.GGMLQuantizationType.F16 or data.shape[-1] % gguf.GGML_QUANT_SIZES[kind][0]:
            kind = gguf.GGMLQuantizationType.F16
            data = data.astype(np.float16)
        elif imp is not None and kind != gguf.GGMLQuantizationType.Q8_0:
            from slimlm.export.llamacpp import quantize_rows

            data = quantize_rows(data, kind, imp)
            weighted += 1
        else:
            data = gguf.quants.quantize(data, kind)
        counts[kind.name] = counts.get(kind.name, 0) + 1
        w.add_tensor(new, data, raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    info = {"architecture": arch, "type": precision, "tensor_types": counts, "bpe_merges": len(merges),
            "tokenizer": reading,
            "imatrix_tensors": weighted, **({"q4_0_grid_tensors": exact} if precision == "q4_0" else {})}
    if precision in KQUANTS:
        info["kquant_fallback_tensors"] = fallback
    return info


_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
           "vocab_size")


def gguf_logits_fn(path: Path, config):
    """Logits of the GGUF file read back by transformers' own GGUF loader (dequantized to fp32).

    The metadata is read on its own (``AutoConfig``) and its shape fields compared with the variant's; the
    tensors are then loaded into the variant's config, because transformers' GGUF config mapping leaves out
    fields llama.cpp derives itself (Qwen's head size, Gemma's query scale), which would otherwise be taken
    from the class defaults.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from slimlm.export.check import ExportCheckError, torch_logits

    read = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    bad = {f: (getattr(read, f, None), getattr(config, f)) for f in _FIELDS if getattr(read, f, None) != getattr(config, f)}
    if bad:
        raise ExportCheckError(f"{path.name}: the GGUF metadata disagrees with the variant on {bad} (read, expected).")
    if config.model_type == "mistral":  # written as llama.cpp's llama (no sliding window: the sample is shorter)
        from transformers import LlamaConfig

        config = LlamaConfig(**{k: v for k, v in config.to_dict().items() if k not in ("model_type", "architectures")})
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32, config=config)
    return torch_logits(hf.eval()), "transformers GGUF reader (metadata shape fields compared; tensors dequantized)"
