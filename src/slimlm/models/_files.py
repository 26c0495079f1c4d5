"""Checks on weight files before anything reads them.

We read weights only from safetensors (or GGUF). A truncated or corrupt safetensors file is caught here,
from its header, with a sentence naming the file, instead of a deep stack trace from the loader.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from slimlm.errors import ModelFileError


def check_safetensors(path: Path) -> dict[str, tuple[int, ...]]:
    """Raise `ModelFileError` unless ``path`` has a readable header whose tensors fit in the file; return each
    tensor's shape, read from that header (no tensor data is read)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("file shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > 100_000_000:
                raise ValueError("implausible header length")
            if n > size - 8:
                raise ModelFileError(
                    f"{path} is truncated: its header alone needs {n + 8:,} bytes but the file has {size:,}; "
                    "re-save or re-download it."
                )
            header = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path} is not a valid safetensors file ({exc}); re-save or re-download it.") from None
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        raise ModelFileError(f"{path} is not a valid safetensors file (a tensor entry without data offsets); "
                             "re-save or re-download it.") from None
    if 8 + n + end > size:
        raise ModelFileError(
            f"{path} is truncated: its header describes {8 + n + end:,} bytes but the file has {size:,}; "
            "re-save or re-download it."
        )
    try:
        return {k: tuple(int(d) for d in v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ModelFileError(f"{path} is not a valid safetensors file (a tensor without a shape); "
                             "re-save or re-download it.") from None


def weight_files(directory: Path, allow_pickle: bool = False) -> list[Path]:
    """The safetensors files of an HF directory, checked; fail clearly if there are only pickles."""
    st = sorted(directory.glob("*.safetensors"))
    if st:
        for p in st:
            check_safetensors(p)
        return st
    pickles = sorted(directory.glob("*.bin")) + sorted(directory.glob("*.pt"))
    if pickles and not allow_pickle:
        raise ModelFileError(
            f"{directory} holds only pickled weights ({pickles[0].name}); slimlm reads safetensors only. "
            "Convert them to safetensors where you trust the file (from_pretrained, then save_pretrained), "
            "or call slimlm.models.load(..., allow_pickle=True)."
        )
    if not pickles:
        raise ModelFileError(f"{directory} has a config.json but no weights (*.safetensors); "
                             "save the model into it with save_pretrained.")
    return pickles


def fingerprint(files: list[Path]) -> list[list]:
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
