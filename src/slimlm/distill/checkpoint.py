"""Training checkpoints: model, extra modules, optimizer, scheduler, RNG, step, history; written atomically.

A checkpoint is one directory (``state.pt`` + ``meta.json``) replaced in a single rename, so a run killed
while writing leaves the previous checkpoint intact. ``state.pt`` holds tensors and plain containers only
and is read back with ``torch.load(weights_only=True)``: no pickled code is ever executed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from slimlm._io import atomic_dir, write_json_atomic
from slimlm.errors import ConfigError

#: settings a resumed run may change: they do not change what is computed (how often checkpoints are
#: written; activation checkpointing, e.g. turned on to resume a run the OOM killer stopped)
RESUME_MAY_CHANGE = frozenset({"checkpoint_every", "gradient_checkpointing"})

STATE = "state.pt"
META = "meta.json"
_META_KEYS = {"step", "tokens", "config", "history", "eval_curve", "best"}
_STATE_KEYS = {"model", "optimizer", "scheduler", "rng"}


def save_checkpoint(directory: Path, state: dict, meta: dict) -> None:
    with atomic_dir(directory, marker=META) as tmp:
        torch.save(state, tmp / STATE)
        write_json_atomic(tmp / META, {"slimlm_checkpoint": 1, **meta})


def has_checkpoint(directory: Path) -> bool:
    return (directory / STATE).is_file() and (directory / META).is_file()


def load_checkpoint(directory: Path) -> tuple[dict, dict]:
    """Read a checkpoint written by `save_checkpoint`; anything else is a `ConfigError`, never unpickled code."""
    bad = (f"{directory} is not a slimlm training checkpoint ({{}}); delete it, or choose another --out "
           "to start a new run.")
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(bad.format(f"{META} is unreadable: {exc}")) from None
    if not isinstance(meta, dict) or not _META_KEYS <= meta.keys():
        raise ConfigError(bad.format(f"{META} lacks its fields"))
    try:
        state = torch.load(directory / STATE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read it safely means it is not ours
        raise ConfigError(bad.format(f"{STATE} cannot be read safely: {type(exc).__name__}")) from None
    if not isinstance(state, dict) or not _STATE_KEYS <= state.keys():
        raise ConfigError(bad.format(f"{STATE} lacks model, optimizer, scheduler or rng state"))
    return state, meta
