"""Per-layer fallback: keep the layers whose quantization costs most in fp32 until a tolerance holds.

The Intel Neural Compressor idea, made measurable: each quantized layer's sensitivity is the KL divergence
from the fp32 model's next-token distribution when only that layer is quantized (one short forward per
layer); then layers go back to fp32 in order of sensitivity, 0, 1, 2, 4, 8, ... of them, and a bisection
finds the fewest that meet the tolerance. Every point walked (layers kept in fp32, perplexity ratio on the
held-out calibration rows) is returned as the frontier, so the cost of the tolerance is visible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from slimlm._progress import or_noop
from slimlm.models.qlayers import set_module


@torch.inference_mode()
def lm_loss(hf: nn.Module, rows: torch.Tensor, batch_size: int = 4) -> float:
    """Mean next-token cross-entropy over ``rows`` (n, T)."""
    total, count = 0.0, 0
    for i in range(0, rows.shape[0], batch_size):
        x = rows[i : i + batch_size]
        logits = hf(x).logits[:, :-1].float()
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum").item()
        count += x[:, 1:].numel()
    return total / count


@torch.inference_mode()
def _kl(hf: nn.Module, x: torch.Tensor, ref_logp: torch.Tensor) -> float:
    logp = F.log_softmax(hf(x).logits.float(), dim=-1)
    return float((ref_logp.exp() * (ref_logp - logp)).sum(-1).mean())


def walk(hf: nn.Module, originals: dict[str, nn.Module], quantized: dict[str, nn.Module], holdout: torch.Tensor,
         tolerance: float, max_layers: int | None = None, sens_tokens: int = 256, progress=None,
         fallback: dict[str, nn.Module] | None = None) -> dict:
    """Decide which layers fall back (to ``fallback``'s modules, default ``originals``: fp32). Leaves ``hf``
    with the chosen mix swapped in. Sensitivities and the tolerance are measured against ``originals``.

    Returns:
        ``{"fp32_layers": [names], "sensitivity": {name: kl}, "frontier": [{"fp32_layers", "ppl_ratio"}],
        "ppl_ratio": final, "met": bool}``.
    """
    progress = or_noop(progress)
    names = list(quantized)
    for n in names:
        set_module(hf, n, originals[n])
    base = lm_loss(hf, holdout)
    x = holdout[:1, :sens_tokens]
    with torch.inference_mode():
        ref_logp = F.log_softmax(hf(x).logits.float(), dim=-1)
    sens = {}
    for i, n in enumerate(names):
        set_module(hf, n, quantized[n])
        sens[n] = _kl(hf, x, ref_logp)
        set_module(hf, n, originals[n])
        progress("sensitivity", i + 1, len(names))
    order = sorted(names, key=lambda n: -sens[n])
    back = fallback or originals
    limit = len(names) if max_layers is None else min(max_layers, len(names))
    cache: dict[int, float] = {}

    def ratio(k: int) -> float:
        if k not in cache:
            keep = set(order[:k])
            for n in names:
                set_module(hf, n, back[n] if n in keep else quantized[n])
            cache[k] = math.exp(lm_loss(hf, holdout) - base)
            progress("fallback", len(cache), len(cache) + 1)
        return cache[k]

    ok = lambda k: ratio(k) <= 1 + tolerance  # noqa: E731
    k, lo = 0, -1
    while not ok(k) and k < limit:  # grow 0, 1, 2, 4, ... then bisect (lo fails, k meets)
        lo, k = k, min(limit, max(1, 2 * k))
    met = ok(k)
    while met and k - lo > 1:
        mid = (lo + k) // 2
        if ok(mid):
            k = mid
        else:
            lo = mid
    ratio(k)  # leave the model in the chosen state
    keep = set(order[:k])
    for n in names:
        set_module(hf, n, back[n] if n in keep else quantized[n])
    frontier = [{"fp32_layers": kk, "ppl_ratio": cache[kk]} for kk in sorted(cache)]
    return {"fp32_layers": order[:k], "sensitivity": sens, "frontier": frontier, "ppl_ratio": cache[k],
            "met": met, "tolerance": tolerance}
