"""Domain vocabulary trimming: keep the tokens a domain uses, and a tokenizer that produces only those.

Kept ids = every id the tokenizer produces on the domain texts, every added/special token, every
single-byte token of a byte-level alphabet, and the BPE merge ancestors of all of these. Keeping the
ancestors (with every merge whose parts and result are kept, in the original order) makes the trimmed BPE
tokenizer produce exactly the original tokens (renumbered) on any text made only of kept tokens: BPE
applies the lowest-ranked applicable merge, and every merge on the original path is still there.

Fallback, documented: text with a token the domain never used is still encoded, into smaller kept pieces
(down to single bytes), so it round-trips exactly; it only costs more tokens and some quality. Non-BPE
tokenizers (WordPiece, Unigram) are refused with a `ConfigError`.
"""

from __future__ import annotations

import json

import torch

from slimlm.errors import ConfigError, DataError
from slimlm.models import Model
from slimlm.prune.surgery import slice_vocab


def _bpe_json(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError("vocab=domain needs a fast (tokenizers) tokenizer; this model's tokenizer is not one.")
    j = json.loads(backend.to_str())
    if j["model"]["type"] != "BPE":
        raise ConfigError(f"vocab=domain supports BPE tokenizers only; this one is {j['model']['type']}.")
    return j


def _merge_pair(m) -> tuple[str, str]:
    return tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1))


def domain_ids(tokenizer, texts: list[str]) -> set[int]:
    """Ids the tokenizer produces on ``texts`` (no special tokens added)."""
    seen: set[int] = set()
    for text in texts:
        seen.update(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    return seen


def keep_ids(tokenizer, texts: list[str]) -> tuple[list[int], int]:
    """Sorted old ids to keep for a domain (see module docstring), and how many of them the texts use."""
    j = _bpe_json(tokenizer)
    vocab: dict[str, int] = j["model"]["vocab"]
    inv = {i: t for t, i in vocab.items()}
    keep = domain_ids(tokenizer, texts)
    used = len(keep)
    keep |= {t["id"] for t in j["added_tokens"]}
    if _is_byte_level(j):
        from tokenizers import pre_tokenizers

        keep |= {vocab[c] for c in pre_tokenizers.ByteLevel.alphabet() if c in vocab}
    parents = {}
    for m in j["model"]["merges"]:
        a, b = _merge_pair(m)
        parents.setdefault(a + b, (a, b))
    stack = [inv[i] for i in keep if i in inv]
    while stack:
        tok = stack.pop()
        for part in parents.get(tok, ()):
            pid = vocab.get(part)
            if pid is not None and pid not in keep:
                keep.add(pid)
                stack.append(part)
    return sorted(keep), used


def _is_byte_level(j: dict) -> bool:
    pre = j.get("pre_tokenizer") or {}
    items = pre.get("pretokenizers", [pre]) if pre else []
    return any(p.get("type") == "ByteLevel" for p in items)


def trim_tokenizer(tokenizer, keep: list[int]):
    """A working tokenizer over the kept ids only, renumbered 0..len(keep)-1 in the original order."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    j = _bpe_json(tokenizer)
    new_id = {old: new for new, old in enumerate(keep)}
    vocab = j["model"]["vocab"]
    kept_tokens = {t for t, i in vocab.items() if i in new_id}
    j["model"]["vocab"] = {t: new_id[i] for t, i in sorted(vocab.items(), key=lambda kv: kv[1]) if i in new_id}
    merges = []
    for m in j["model"]["merges"]:
        a, b = _merge_pair(m)
        if a in kept_tokens and b in kept_tokens and a + b in kept_tokens:
            merges.append(m)
    j["model"]["merges"] = merges
    for t in j["added_tokens"]:
        t["id"] = new_id[t["id"]]
    _remap_post_processor(j.get("post_processor"), new_id)
    backend = Tokenizer.from_str(json.dumps(j))
    specials = {k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "pad_token", "unk_token",
                                                   "cls_token", "sep_token", "mask_token")
                if getattr(tokenizer, k, None) is not None}
    new = PreTrainedTokenizerFast(tokenizer_object=backend, **specials)
    if getattr(tokenizer, "chat_template", None):
        new.chat_template = tokenizer.chat_template
    new.model_max_length = tokenizer.model_max_length
    return new


def _remap_post_processor(pp, new_id: dict[int, int]) -> None:
    if not pp:
        return
    if pp.get("type") == "Sequence":
        for p in pp.get("processors", []):
            _remap_post_processor(p, new_id)
    for spec in (pp.get("special_tokens") or {}).values():
        if isinstance(spec, dict) and "ids" in spec:
            spec["ids"] = [new_id[i] for i in spec["ids"]]
    for key in ("sep", "cls"):
        if isinstance(pp.get(key), list) and len(pp[key]) == 2:
            pp[key][1] = new_id[pp[key][1]]


def trim_vocab(model: Model, texts: list[str]) -> dict:
    """Trim ``model`` (embeddings, lm_head, config, tokenizer) to the domain of ``texts``; returns a report."""
    if not texts:
        raise DataError("vocab=domain needs the domain's texts; pass --data with text of your deployment domain.")
    old_vocab = model.adapter.vocab_size
    keep, used = keep_ids(model.tokenizer, texts)
    if keep[-1] >= old_vocab:
        raise ConfigError(f"the tokenizer produces id {keep[-1]} but the model has only {old_vocab} embeddings.")
    new_tok = trim_tokenizer(model.tokenizer, keep)
    remap = {old: new for new, old in enumerate(keep)}
    slice_vocab(model, torch.tensor(keep), remap)
    previous = model.provenance.get("vocab_map")
    model.provenance["vocab_map"] = [previous[i] for i in keep] if previous else keep
    model.tokenizer = new_tok
    if new_tok.pad_token is None and new_tok.eos_token is not None:
        new_tok.pad_token = new_tok.eos_token
    return {"vocab_before": old_vocab, "vocab_after": len(keep), "domain_tokens_used": used}
