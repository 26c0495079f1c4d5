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

STATE = "state.pt"
META = "meta.json"


def save_checkpoint(directory: Path, state: dict, meta: dict) -> None:
    with atomic_dir(directory) as tmp:
        torch.save(state, tmp / STATE)
        write_json_atomic(tmp / META, meta)


def has_checkpoint(directory: Path) -> bool:
    return (directory / STATE).is_file() and (directory / META).is_file()


def load_checkpoint(directory: Path) -> tuple[dict, dict]:
    meta = json.loads((directory / META).read_text())
    state = torch.load(directory / STATE, map_location="cpu", weights_only=True)
    return state, meta
