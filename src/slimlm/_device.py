"""``--device``: which torch device a command runs on, checked before any weights are read."""

from __future__ import annotations

import os

import torch

from slimlm.errors import ConfigError


def pick_device(device: str) -> torch.device:
    """``auto``: this rank's GPU if there is one (``LOCAL_RANK`` under torchrun), else the CPU; otherwise the
    device named, refused in one line when this machine does not have it."""
    if device == "auto":
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a device; use auto, cpu or cuda:0.") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not n:
            raise ConfigError(f"--device {device}: this machine has no CUDA GPU (or this torch build has no CUDA); "
                              "use --device cpu or auto.")
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"--device {device}: this machine has {n} GPU(s), cuda:0 to cuda:{n - 1}.")
    elif dev.type not in ("cpu", "cuda") and not _has(dev.type):
        raise ConfigError(f"--device {device}: no {dev.type} device here; use auto, cpu or cuda:0.")
    return dev


def _has(kind: str) -> bool:
    backend = getattr(torch, kind, None) or getattr(torch.backends, kind, None)
    return bool(backend is not None and getattr(backend, "is_available", lambda: False)())
