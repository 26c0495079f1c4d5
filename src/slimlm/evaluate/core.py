"""Quality evaluation: perplexity, calibration (ECE), teacher agreement, accuracy and macro-F1.

Perplexity: non-overlapping windows of ``seq_len`` tokens, no BOS, the loss averaged
over every predicted token (a window of L tokens predicts L-1), a fixed token budget spread evenly over the
eval documents. It agrees with ``exp(mean of model(x, labels=x).loss weighted by L-1)`` on the same windows.
Windows shorter than a full one (short documents) are scored several to a forward pass, right-padded.
ECE is measured on the top-1 next-token prediction (or the class prediction for classifiers): compression
can keep a model right but make it over-confident, and users threshold on confidence.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from slimlm._progress import or_noop
from slimlm.data import Corpus, eval_windows
from slimlm.errors import DataError
from slimlm.evaluate.metrics import ECEAccumulator, kl_teacher_student, macro_f1
from slimlm.models import Model

DEFAULT_SEQ_LEN = 512
DEFAULT_MAX_TOKENS = 16384
MIN_EVAL_TOKENS = 16  # fewer predicted tokens give a perplexity that means nothing
BATCH_TOKENS = 512  # padded tokens per forward pass when windows are short (one full default window)


def _check_seq_len(model: Model, seq_len: int) -> None:
    limit = model.adapter.max_positions
    if limit and seq_len > limit:
        raise DataError(f"--seq-len {seq_len} exceeds the model's maximum of {limit} positions; use at most {limit}.")
    if seq_len < 2:
        raise DataError("--seq-len must be at least 2.")


def _check_teacher(model: Model, teacher: Model) -> None:
    if teacher.adapter.vocab_size != model.adapter.vocab_size and not model.provenance.get("vocab_map"):
        raise DataError(
            f"teacher vocabulary ({teacher.adapter.vocab_size}) differs from the model's "
            f"({model.adapter.vocab_size}); teacher agreement needs the same tokenizer."
        )


def _teacher_logits_in_student_vocab(model: Model, logits: torch.Tensor) -> torch.Tensor:
    keep = model.provenance.get("vocab_map")  # student id -> teacher id, for vocabulary-trimmed students
    return logits if not keep else logits[..., torch.as_tensor(keep)]


def _utf8_bytes(tokenizer, ids: torch.Tensor) -> int:
    """UTF-8 bytes of the text the tokens ``ids`` spell (0 when the tokenizer cannot decode)."""
    try:
        return len(tokenizer.decode(ids.tolist(), skip_special_tokens=False).encode("utf-8"))
    except Exception:  # noqa: BLE001 - a tokenizer without decode just gets no per-byte figure
        return 0


def _batches(windows: list[torch.Tensor], budget: int = BATCH_TOKENS) -> list[list[int]]:
    """Window indices grouped so that each group, right-padded to its longest window, holds at most ``budget``
    tokens (a longer window goes alone): short documents (reviews, docstrings) share one forward pass, while
    the peak memory stays that of one full window."""
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i]))
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * len(windows[groups[-1][0]]) <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@torch.inference_mode()
def _evaluate_lm(model: Model, windows: list[torch.Tensor], teacher: Model | None, progress) -> dict:
    nll, count, top1, kl_sum, n_bytes = 0.0, 0, 0, 0.0, 0
    ece = ECEAccumulator()
    device = next(model.hf.parameters()).device
    vmap = model.provenance.get("vocab_map") if teacher is not None else None
    done = 0
    for group in _batches(windows):
        rows = [windows[i] for i in group]
        lengths = torch.tensor([len(w) for w in rows])
        # right padding: a causal model's real positions never attend to the pad after them, so no mask is needed
        x = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True).to(device)  # (B, L)
        sel = (torch.arange(x.shape[1] - 1)[None, :] < (lengths - 1)[:, None]).to(device)  # predicted positions
        logits = model.hf(x).logits[:, :-1][sel].float()  # (N, V)
        target = x[:, 1:][sel]
        logp = F.log_softmax(logits, dim=-1)
        nll -= logp.gather(-1, target[:, None]).sum().item()
        conf, pred = logp.max(-1)
        ece.update(conf.exp(), pred == target)
        count += target.numel()
        n_bytes += sum(_utf8_bytes(model.tokenizer, w[1:]) for w in rows)
        if teacher is not None:
            tx = x if not vmap else torch.as_tensor(vmap, device=x.device)[x]  # the teacher reads its own token ids
            t_logits = _teacher_logits_in_student_vocab(model, teacher.hf(tx).logits[:, :-1][sel].float())
            top1 += (t_logits.argmax(-1) == pred).sum().item()
            kl_sum += kl_teacher_student(t_logits, logits).sum().item()
        done += len(group)
        progress("evaluate", done, len(windows))
    out = {"perplexity": math.exp(nll / count), "nll": nll / count, "tokens": count, "ece": ece.value()}
    if n_bytes:  # tokenizer-independent: comparable between a trimmed vocabulary and its parent's
        out["bits_per_byte"] = nll / math.log(2) / n_bytes
        out["bytes_per_token"] = n_bytes / count
    if teacher is not None:
        out["teacher_agreement"] = {"top1": top1 / count, "kl": kl_sum / count}
    return out


def spread_sample(items: list, n: int | None) -> list:
    """``n`` items at evenly spaced positions over the whole of ``items``, in order (all of them when ``n`` is
    falsy or not smaller). Splits are often grouped by label or by source (a genre's plays in a row, one movie's
    reviews together), so taking every k-th item with an integer k, or the first ``n``, would leave out the
    groups at the end: 858 passages and a budget of 512 gave k = 1, the first 512, and two of six genres."""
    if not n or len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]  # distinct: the spacing len/n is above 1


@torch.inference_mode()
def _evaluate_classifier(model: Model, corpus: Corpus, split: str, seq_len: int, max_examples: int | None,
                         teacher: Model | None, batch_size: int, progress) -> dict:
    docs = spread_sample(corpus.split(split), max_examples)
    n_cls = len(corpus.labels)
    head = model.hf.config.num_labels
    if head != n_cls:
        raise DataError(f"the model's head has {head} classes but data {corpus.name!r} has {n_cls} labels.")
    # the head's own class ids when its config names the data's labels (a classifier trained elsewhere, or by
    # an older slimlm that ordered integer labels as text); else the data's order, as slimlm trains
    named = {str(k): int(v) for k, v in (getattr(model.hf.config, "label2id", None) or {}).items()}
    head_id = [named[name] for name in corpus.labels] if set(named) == set(corpus.labels) else None
    preds, targets, tokens = [], [], 0
    ece = ECEAccumulator()
    top1, kl_sum = 0, 0.0
    for i in range(0, len(docs), batch_size):
        chunk = docs[i : i + batch_size]
        enc = model.tokenizer([d.text for d in chunk], truncation=True, max_length=seq_len, padding=True,
                              return_tensors="pt").to(next(model.hf.parameters()).device)
        tokens += int(enc["attention_mask"].sum())
        logits = model.hf(**enc).logits.float()  # (B, C)
        probs = logits.softmax(-1)
        conf, pred = probs.max(-1)
        target = torch.tensor([head_id[d.label] if head_id else d.label for d in chunk], device=logits.device)
        ece.update(conf, pred == target)
        preds.append(pred)
        targets.append(target)
        if teacher is not None:
            t_logits = teacher.hf(**enc).logits.float()
            top1 += (t_logits.argmax(-1) == pred).sum().item()
            kl_sum += kl_teacher_student(t_logits, logits).sum().item()
        progress("evaluate", min(i + batch_size, len(docs)), len(docs))
    pred, target = torch.cat(preds), torch.cat(targets)
    out = {"perplexity": None, "tokens": tokens, "examples": len(docs), "ece": ece.value(),
           "accuracy": (pred == target).float().mean().item(), "f1": macro_f1(pred, target, n_cls)}
    if teacher is not None:
        out["teacher_agreement"] = {"top1": top1 / len(docs), "kl": kl_sum / len(docs)}
    return out


def perplexity_windows(model: Model, corpus: Corpus, split: str, seq_len: int, max_tokens: int | None,
                       option: str = "--max-tokens") -> list:
    """The windows perplexity is computed on; too little text is a `DataError`, not a number over 2 tokens.
    ``option``: the flag that set ``max_tokens``, for the message."""
    if max_tokens is not None and max_tokens < MIN_EVAL_TOKENS:
        raise DataError(f"{option} {max_tokens} is too small: perplexity needs at least {MIN_EVAL_TOKENS} "
                        "tokens (0 means all of the split).")
    windows = eval_windows(model.tokenizer, corpus.texts(split), seq_len, max_tokens)
    predicted = sum(len(w) - 1 for w in windows)
    if predicted < MIN_EVAL_TOKENS:
        total = predicted + len(windows)
        if max_tokens and total >= max_tokens:  # the budget, not the text, ran out
            raise DataError(f"{option} {max_tokens} leaves {predicted} predicted tokens (the first token of "
                            f"each window is context only); perplexity needs at least {MIN_EVAL_TOKENS}: raise it.")
        raise DataError(f"data {corpus.name!r} has only {total} tokens in its {split} split; "
                        f"perplexity needs at least {MIN_EVAL_TOKENS}: give more text.")
    return windows


def evaluate(
    model: Model,
    corpus: Corpus,
    *,
    split: str = "eval",
    seq_len: int = DEFAULT_SEQ_LEN,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    max_examples: int | None = 512,
    teacher: Model | None = None,
    batch_size: int = 16,
    progress=None,
) -> dict:
    """Measure a model's quality on a corpus split.

    Args:
        model: the model; a causal LM gets perplexity, a classifier accuracy and macro-F1.
        corpus: from `slimlm.data.load_data`.
        split: ``eval`` by default.
        seq_len: window length for perplexity (truncation length for classification).
        max_tokens: perplexity token budget, spread over the split's documents (``None``: all of it).
        max_examples: classification budget, spread over the split.
        teacher: if given, also report teacher agreement (top-1 match rate, mean KL(teacher||model)).
        progress: optional ``progress(desc, done, total)``.

    Returns:
        ``{"perplexity", "tokens", "seq_len", "ece", "accuracy"?, "f1"?, "teacher_agreement"?, "seconds"}``.
    """
    progress = or_noop(progress)
    _check_seq_len(model, seq_len)
    if teacher is not None:
        _check_teacher(model, teacher)
    start = time.perf_counter()
    if model.task == "causal-lm":
        if corpus.task == "classification" and not corpus.splits.get(split):
            raise DataError(f"data {corpus.name!r} has no {split} text.")
        windows = perplexity_windows(model, corpus, split, seq_len, max_tokens)
        out = _evaluate_lm(model, windows, teacher, progress)
    elif model.task == "classification":
        if corpus.task != "classification":
            raise DataError(
                f"data {corpus.name!r} has no labels; a classifier needs labelled data "
                "(shakespeare-genre, or a .jsonl/.csv with a label field)."
            )
        out = _evaluate_classifier(model, corpus, split, seq_len, max_examples, teacher, batch_size, progress)
    else:
        raise DataError(
            f"{model.spec} is an encoder without a task head: it has no perplexity or accuracy to measure; "
            "fine-tune a classification head first (slimlm finetune) or evaluate a causal LM."
        )
    return {"model": model.spec, "data": corpus.name, "split": split, "seq_len": seq_len, **out,
            "seconds": time.perf_counter() - start}
