"""Data: corpora from specs, tokenising and packing, and the calibration sampler."""

from slimlm.data.corpus import (
    GENRES,
    SHAKESPEARE_CALIBRATION,
    SHAKESPEARE_EVAL,
    SPLITS,
    Corpus,
    Document,
    data_list,
    load_data,
    shakespeare_plays,
    shakespeare_text_path,
    split_by_hash,
)
from slimlm.data.tokens import calibration_batch, encode, eval_windows, pack

__all__ = [
    "Corpus", "Document", "GENRES", "SHAKESPEARE_CALIBRATION", "SHAKESPEARE_EVAL", "SPLITS", "calibration_batch",
    "data_list", "encode", "eval_windows", "load_data", "pack", "shakespeare_plays", "shakespeare_text_path", "split_by_hash",
]
