"""Metric kernels on tensors: NLL sums, expected calibration error, teacher agreement, macro-F1."""

from __future__ import annotations

import torch
import torch.nn.functional as F

ECE_BINS = 15


class ECEAccumulator:
    """Expected calibration error over equal-width confidence bins (15 by default), streamed."""

    def __init__(self, bins: int = ECE_BINS):
        self.bins = bins
        self.count = torch.zeros(bins, dtype=torch.float64)
        self.conf = torch.zeros(bins, dtype=torch.float64)
        self.correct = torch.zeros(bins, dtype=torch.float64)

    def update(self, confidence: torch.Tensor, correct: torch.Tensor) -> None:
        idx = (confidence.double() * self.bins).long().clamp_(0, self.bins - 1)
        self.count += torch.bincount(idx, minlength=self.bins).double()
        self.conf += torch.bincount(idx, weights=confidence.double(), minlength=self.bins)
        self.correct += torch.bincount(idx, weights=correct.double(), minlength=self.bins)

    def value(self) -> float:
        n = self.count.sum()
        if n == 0:
            return float("nan")
        nz = self.count > 0
        gap = (self.conf[nz] / self.count[nz] - self.correct[nz] / self.count[nz]).abs()
        return float((self.count[nz] / n * gap).sum())


def kl_teacher_student(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per position, in nats: (..., V) -> (...)."""
    t = F.log_softmax(teacher_logits.float(), dim=-1)
    s = F.log_softmax(student_logits.float(), dim=-1)
    return (t.exp() * (t - s)).sum(-1)


def macro_f1(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    f1s = []
    for c in range(num_classes):
        tp = ((pred == c) & (target == c)).sum().item()
        fp = ((pred == c) & (target != c)).sum().item()
        fn = ((pred != c) & (target == c)).sum().item()
        if tp + fp + fn == 0:
            continue  # class absent from both: it does not count toward the macro average
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s) if f1s else float("nan")


def perplexity_drop(ppl: float, base_ppl: float, bpb: float | None = None, base_bpb: float | None = None,
                    bpt: float | None = None, base_bpt: float | None = None) -> float:
    """Relative perplexity change of a variant against its baseline, in the baseline's tokens.

    With the same tokenization (equal bytes per token) this is ``ppl / base_ppl - 1``. When the two read the
    text in different tokens (a vocabulary-trimmed variant splits words it never saw into smaller pieces,
    each easier to predict, so its per-token perplexity flatters it), the drop comes from bits per byte,
    which do not depend on the tokenizer, expressed per baseline token: ``2 ** ((bpb - base_bpb) *
    base_bpt) - 1``, the same scale as a perplexity ratio.

    Example:
        >>> round(perplexity_drop(12.0, 10.0), 3)
        0.2
        >>> round(perplexity_drop(9.0, 10.0, 1.1, 1.0, 2.0, 4.0), 3)  # lower per token, worse per byte
        0.32
    """
    if None in (bpb, base_bpb, bpt, base_bpt) or abs(bpt / base_bpt - 1) < 1e-6:
        return ppl / base_ppl - 1
    return 2.0 ** ((bpb - base_bpb) * base_bpt) - 1
