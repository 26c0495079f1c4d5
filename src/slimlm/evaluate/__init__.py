"""Evaluate: perplexity, calibration, teacher agreement, classification accuracy and F1."""

from slimlm.evaluate.core import DEFAULT_MAX_TOKENS, DEFAULT_SEQ_LEN, evaluate
from slimlm.evaluate.metrics import ECEAccumulator, kl_teacher_student, macro_f1, perplexity_drop

__all__ = ["DEFAULT_MAX_TOKENS", "DEFAULT_SEQ_LEN", "ECEAccumulator", "evaluate", "kl_teacher_student", "macro_f1",
           "perplexity_drop"]

from slimlm._verbs import make_callable  # noqa: E402

make_callable(__name__, "slimlm.evaluate:evaluate")  # `slimlm.evaluate(...)` calls the public verb
