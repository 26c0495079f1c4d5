"""Sensitivity analysis: the quality drop when one block (or one block's heads / FFN / weights) is pruned alone.

The pruning is simulated by zeroing (or skipping a block) and restoring afterwards, which gives the same
outputs as physical removal at a fraction of the cost: removing FFN channel c is zeroing column c of down,
removing a query head is zeroing its columns of o. Importance comes from one dense calibration pass
(activation norms, as the structured and Wanda pruners use), so the table predicts what those pruners do.
Quality is perplexity on fixed eval windows for causal LMs, and 1 − cos(output, dense output) for encoders.
The table feeds non-uniform allocation (low-sensitivity layers can take more pruning) and the search.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F

from slimlm._progress import or_noop
from slimlm.calibration import Calibration, InputStats
from slimlm.errors import ConfigError
from slimlm.models import Model
from slimlm.prune.calibrate import LayerRunner, input_groups
from slimlm.prune.importance import structured as imp
from slimlm.prune.importance import wanda
from slimlm.prune.masks import row_mask

Kind = Literal["layers", "ffn", "heads", "unstructured"]
KINDS = ("layers", "ffn", "heads", "unstructured")


@contextmanager
def _zeroed(pairs: list[tuple[torch.Tensor, torch.Tensor]]):
    """Zero ``tensor[mask]`` for each (tensor, bool mask) and restore on exit."""
    saved = [(t, t.detach().clone()) for t, _ in pairs]
    try:
        with torch.no_grad():
            for t, mask in pairs:
                t.data[mask] = 0
        yield
    finally:
        with torch.no_grad():
            for t, orig in saved:
                t.data.copy_(orig)


class _Quality:
    """Perplexity (causal LM) or output drift (encoder) on fixed windows."""

    def __init__(self, model: Model, windows: torch.Tensor, batch_size: int = 4):
        self.model, self.windows, self.bs = model, windows, batch_size
        self.causal = model.adapter.causal
        self.reference = None if self.causal else self._outputs()

    @torch.inference_mode()
    def _outputs(self) -> list[torch.Tensor]:
        hf = self.model.hf
        return [hf(input_ids=b, output_hidden_states=True).hidden_states[-1] for b in self.windows.split(self.bs)]

    @torch.inference_mode()
    def __call__(self) -> float:
        if self.causal:
            nll, n = 0.0, 0
            for b in self.windows.split(self.bs):
                logits = self.model.hf(input_ids=b, use_cache=False).logits[:, :-1].float()
                nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1), reduction="sum").item()
                n += b[:, 1:].numel()
            return math.exp(nll / n)
        drift = [1 - F.cosine_similarity(o, r, dim=-1).mean().item() for o, r in zip(self._outputs(), self.reference, strict=True)]
        return sum(drift) / len(drift)


def _wanda_norms(model: Model, calib: Calibration, progress) -> list[dict]:
    """Per block: {group name: input column norms} from one dense pass."""
    runner = LayerRunner(model, calib.tokens, calib.batch_size, progress)
    out = []
    for layer in model.adapter.layers():
        groups = input_groups(model, layer)
        with InputStats({g: mods[0] for g, mods in groups.items()}, norms=True) as stats:
            runner.advance(layer)
        out.append({g: stats.norm(g) for g in groups})
    return out


def sensitivity(model: Model, calib: Calibration, windows: torch.Tensor, *, kind: Kind = "layers",
                ratios: tuple[float, ...] = (0.25, 0.5), progress=None) -> dict:
    """Quality when each block is pruned alone, for each ratio.

    Args:
        model: left unchanged on return.
        calib: calibration windows for the importance scores.
        windows: ``(n, seq_len)`` eval token windows for the quality measure.
        kind: ``layers`` (drop the block), ``ffn`` (that block's least active FFN channels), ``heads`` (its
            least active query heads), ``unstructured`` (Wanda at the ratio on that block's Linears).
        ratios: fractions to prune (ignored for ``layers``).
        progress: optional ``progress(desc, done, total)``.

    Returns:
        ``{"kind", "metric", "baseline", "ratios", "rows": [{"layer", "ratio", "value", "ratio_to_baseline"}]}``.
    """
    if kind not in KINDS:
        raise ConfigError(f"--kind {kind!r} is unknown; use one of {', '.join(KINDS)}.")
    if kind != "layers" and (not ratios or any(not 0 < r < 1 for r in ratios)):
        raise ConfigError("--ratios must be fractions between 0 and 1 (for example 0.25,0.5).")
    progress = or_noop(progress)
    start = time.perf_counter()
    a = model.adapter
    quality = _Quality(model, windows)
    baseline = quality()
    layers = list(a.layers())
    ratios = (1.0,) if kind == "layers" else tuple(ratios)
    if kind == "ffn":
        scores = imp.ffn_activation(model, calib, progress)
    elif kind == "heads":
        scores = imp.head_activation(model, calib, progress)
    elif kind == "unstructured":
        norms = _wanda_norms(model, calib, progress)
    rows = []
    total = len(layers) * len(ratios)
    for i, layer in enumerate(layers):
        for r in ratios:
            if kind == "layers":
                with imp._Skip(layer):
                    value = quality()
            else:
                pairs = []
                if kind == "ffn":
                    k = int(round(r * a.intermediate_size))
                    drop = torch.topk(scores[i], k, largest=False).indices
                    mask = torch.zeros_like(a.mlp(layer).down.weight, dtype=torch.bool)
                    mask[:, drop] = True
                    pairs.append((a.mlp(layer).down.weight, mask))
                elif kind == "heads":
                    k = max(1, int(round(r * a.num_heads)))
                    drop = torch.topk(scores[i], k, largest=False).indices.tolist()
                    o = a.attention(layer).o.weight
                    mask = torch.zeros_like(o, dtype=torch.bool)
                    for h in drop:
                        mask[:, h * a.head_dim : (h + 1) * a.head_dim] = True
                    pairs.append((o, mask))
                else:
                    for g, mods in input_groups(model, layer).items():
                        for lin in mods:
                            pairs.append((lin.weight, row_mask(wanda(lin.weight, norms[i][g]), r)))
                with _zeroed(pairs):
                    value = quality()
            rows.append({"layer": i, "ratio": r, "value": value, "ratio_to_baseline": value / baseline if baseline else None})
            progress(f"sensitivity ({kind})", len(rows), total)
    return {"kind": kind, "metric": "perplexity" if quality.causal else "output_drift", "baseline": baseline,
            "ratios": list(ratios), "eval_tokens": int(windows.numel()), "rows": rows,
            "seconds": time.perf_counter() - start}
