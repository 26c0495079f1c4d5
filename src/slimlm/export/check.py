"""The check every export runs on the way out: perplexity on a fixed sample, exported model against the variant.

The sample is a few non-overlapping windows of the variant's own tokenizer (``sample_windows``); both sides
score exactly the same tokens with the same loss (mean next-token cross-entropy, no BOS added), so the only
difference left is what the export changed: numeric precision, quantization, or a wrong conversion. A wrong
conversion (a transposed matrix, a missing norm offset) moves perplexity by orders of magnitude; quantization
moves it by a few percent; the per-format tolerances in `TOLERANCES` sit between the two and are documented
with the figures measured on this project's models in docs/export.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from slimlm.errors import SlimlmError

#: allowed relative perplexity change per exported precision (|ppl_export / ppl_variant - 1|)
TOLERANCES = {
    "f32": 0.001, "f16": 0.01, "bf16": 0.02, "q8_0": 0.03, "q5_0": 0.08, "q5_1": 0.08, "q4_0": 0.15, "q4_1": 0.15,
    "q6_k": 0.03, "q5_k_s": 0.06, "q5_k_m": 0.06, "q4_k_s": 0.12, "q4_k_m": 0.12,  # llama.cpp's K-quant mixes
    "fp32": 0.001, "int8": 0.10, "int4": 0.25,
    # torchao copies of slimlm-quantized variants: the same grid re-quantized (int8-dynamic: torchao's
    # activation rounding differs from slimlm's kernel)
    "int8-weight": 0.005, "int8-dynamic": 0.03, "int4-weight": 0.03,
}


class ExportCheckError(SlimlmError):
    """The exported model's perplexity is not within tolerance of the variant's (``result``: the numbers)."""

    result: dict | None = None

    @classmethod
    def with_result(cls, result: dict, message: str) -> ExportCheckError:
        err = cls(message)
        err.result = result
        return err


def sample_text(text: str | None = None, n: int = 4, seq_len: int = 128) -> str:
    """The check's text: ``text``, or the start of the Shakespeare eval split (about 8 characters a token)."""
    if text is not None:
        return text
    from slimlm.data import load_data

    return "\n".join(load_data("shakespeare").texts("eval"))[: n * seq_len * 8]


def sample_windows(model, text: str | None = None, n: int = 4, seq_len: int = 128) -> torch.Tensor:
    """``(n, seq_len)`` token windows from ``text`` (default: the start of the Shakespeare eval split)."""
    text = sample_text(text, n, seq_len)
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    limit = model.adapter.max_positions
    seq_len = min(seq_len, limit) if limit else seq_len
    n = min(n, len(ids) // seq_len)
    if n < 1:
        raise SlimlmError(f"the check sample has {len(ids)} tokens, fewer than one window of {seq_len}; "
                          "give a longer --sample text.")
    return torch.tensor(ids[: n * seq_len]).reshape(n, seq_len)


def perplexity(logits_fn: Callable[[torch.Tensor], torch.Tensor], windows: torch.Tensor) -> float:
    """exp(mean next-token NLL) over ``windows``; ``logits_fn(ids (1, T)) -> logits (1, T, V)``."""
    total, count = 0.0, 0
    for row in windows:
        ids = row[None, :]
        logits = torch.as_tensor(logits_fn(ids)).float()  # (1, T, V)
        nll = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum")
        total += float(nll)
        count += ids.shape[1] - 1
    return math.exp(total / count)


def torch_logits(hf) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(ids):
        with torch.inference_mode():
            return hf(input_ids=ids, use_cache=False).logits
    return fn


#: GGUF types on the scale-and-minimum grid (Q4_1, Q5_1; the Q5_K mixes fall back to Q5_1 on rows that do not fit
#: a 256 block)
MIN_GRID_TYPES = ("q4_1", "q5_1", "q5_k_s", "q5_k_m")


#: texts the tokenizer check adds to the sample: what tokenizers split differently (digits, contractions, runs of
#: spaces and newlines, tabs, leading spaces, accents, other scripts, an emoji)
TOKENIZER_PROBES = ("In 2024, 1,234.56 apples cost $3.50 -- really?!  Yes:\n\n\tdone.",
                    "don't WON'T you'll  x   y\n\n\n1) first", " leading space, naïve café", "東京 😀 <tag>")
#: the share of check texts the runtime must tokenize exactly as the variant's tokenizer
MIN_TOKENIZER_AGREEMENT = 0.95


def tokenizer_agreement(tokenizer, tokenize: Callable[..., list[int]], text: str, what: str,
                        max_texts: int = 64) -> dict:
    """Raise `ExportCheckError` unless the exported file tokenizes text as the variant's tokenizer does.

    The perplexity check feeds both sides the same token ids, so it cannot see a tokenizer the runtime reads
    differently (spaces dropped, digits grouped): prompts would then reach the model as other tokens. This
    compares the two on ``text``'s paragraphs (up to ``max_texts``) and `TOKENIZER_PROBES`, without special
    tokens, and once with them (BOS/EOS as each adds them).

    Args:
        tokenizer: the variant's (Hugging Face) tokenizer.
        tokenize: ``tokenize(text, add_special=False) -> ids`` of the exported file's runtime.
        text: the check's sample text.
        what: the export, for the error message.
    """
    paras = [p.strip()[:1000] for p in text.split("\n\n") if p.strip()][:max_texts]
    texts = paras + list(TOKENIZER_PROBES)
    same, first = 0, None
    for i, t in enumerate([*texts, texts[0]]):
        special = i == len(texts)  # the last round: with BOS/EOS
        want = tokenizer(t, add_special_tokens=special)["input_ids"]
        got = tokenize(t, add_special=special)
        same += want == got
        if want != got and first is None:
            k = next((j for j, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got)))
            first = {"text": t[:80], "special_tokens": special,
                     "variant": tokenizer.convert_ids_to_tokens(want[max(0, k - 2):k + 4]),
                     "export": tokenizer.convert_ids_to_tokens(got[max(0, k - 2):k + 4])}
    n = len(texts) + 1
    result = {"texts": n, "identical": same, "agreement": same / n, "min_agreement": MIN_TOKENIZER_AGREEMENT,
              "first_difference": first, "passed": same / n >= MIN_TOKENIZER_AGREEMENT}
    if not result["passed"]:
        raise ExportCheckError.with_result(result, (
            f"{what}: the exported file tokenizes {n - same} of {n} check texts differently from the variant's "
            f"tokenizer (first, {first['text']!r}: {first['variant']} against {first['export']}), so prompts "
            f"would reach the model as other tokens; slimlm does not know how the runtime should read this "
            f"tokenizer (--no-check keeps the export anyway)."))
    return result


def compare(variant_ppl: float, export_ppl: float, precision: str, what: str, tolerance: float | None = None) -> dict:
    """Raise `ExportCheckError` unless the perplexities agree within the precision's tolerance."""
    tol = TOLERANCES.get(precision, 0.25) if tolerance is None else tolerance
    rel = export_ppl / variant_ppl - 1.0
    result = {"variant_perplexity": variant_ppl, "export_perplexity": export_ppl, "relative_change": rel,
              "tolerance": tol, "passed": bool(abs(rel) <= tol) and math.isfinite(export_ppl)}
    if not result["passed"]:
        hint = "try a wider type, or --no-check to keep it anyway"
        if precision in MIN_GRID_TYPES:  # docs/export.md: a model tuned from weights on this grid snaps back
            hint = ("a model fine-tuned from weights stored on this grid (e.g. a Q4_1 GGUF) snaps back to them "
                    "and loses its training: try q4_0 or q5_0, a wider type, or --no-check to keep it anyway")
        raise ExportCheckError.with_result(result, (
            f"{what}: exported perplexity {export_ppl:.4g} differs from the variant's {variant_ppl:.4g} by "
            f"{rel:+.2%}, beyond the {tol:.2%} allowed for {precision}; the export is wrong or this precision "
            f"loses too much on this model ({hint})."
        ))
    return result
