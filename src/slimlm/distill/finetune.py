"""Fine-tune a classification head (and the encoder under it) on labelled data: ``slimlm finetune``.

Small on purpose: it is the distillation trainer with hard labels only and no teacher (``loss="ce"``), so
checkpoints, resume, evaluation, early stopping and data parallelism behave exactly as in ``distill``. Use
it to give an encoder without a head (``builtin:minilm-l6``) a task before distilling it into a smaller
student; the head of a freshly loaded encoder is random, so train the whole model, not only the head.
"""

from __future__ import annotations

from slimlm.data import Corpus
from slimlm.distill.config import DistillConfig
from slimlm.distill.trainer import DistillResult, distill_run
from slimlm.errors import ConfigError, DataError
from slimlm.models import Model


def finetune(model: Model, corpus: Corpus, cfg: DistillConfig | None = None, **kwargs) -> DistillResult:
    """Train ``model`` (a classifier) on ``corpus``'s labelled train split with cross-entropy, in place.

    Args:
        model: an encoder loaded with a classification head (``load(spec, num_labels=K)``).
        corpus: labelled data (``shakespeare-genre``, or a .jsonl/.csv with a label field).
        cfg: optimisation settings; the loss is forced to hard-label CE.
        **kwargs: passed to `distill_run` (checkpoint_dir, resume, progress, on_metrics).
    """
    cfg = cfg or DistillConfig(loss="ce", alpha=1.0, lr=5e-4, steps=150, batch_size=16, seq_len=128)
    if cfg.uses_teacher_outputs and cfg.loss != "ce":
        raise ConfigError("finetune trains on hard labels only; use loss='ce' (distill is the command for teachers).")
    if model.task != "classification":
        raise DataError(f"{model.spec} has no classification head; load it with num_labels (slimlm finetune "
                        "--data LABELLED adds one with as many classes as the data has labels).")
    if corpus.task != "classification":
        raise DataError(f"data {corpus.name!r} has no labels; fine-tuning a classifier needs labelled data.")
    if model.hf.config.num_labels != len(corpus.labels):
        raise DataError(f"the head has {model.hf.config.num_labels} classes but data {corpus.name!r} has "
                        f"{len(corpus.labels)} labels; reload the model with num_labels={len(corpus.labels)}.")
    cfg = cfg.model_copy(update={"loss": "ce", "alpha": 1.0})
    return distill_run(model, None, corpus, cfg, **kwargs)
