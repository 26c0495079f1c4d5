"""An export directory's rules, shared by the decoder and encoder exports: the manifest that marks a directory
slimlm wrote, the refusal to write into one it did not, and the optional packages a format needs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from slimlm.errors import ConfigError, SpecError

MANIFEST = "export.json"


def check_out(out: Path) -> None:
    """Refuse an ``out`` that exists and was not written by slimlm export (no `MANIFEST` in a non-empty dir), or
    an earlier export that also holds files slimlm did not write."""
    from slimlm._io import refuse_cwd, refuse_foreign

    refuse_cwd(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise SpecError(f"{out} exists and was not written by slimlm export; give a new --out directory.")
    refuse_foreign(out)  # an earlier export is replaced, never the files a user put beside it


def need(module: str) -> None:
    """Fail with how to install ``module`` when it is missing."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"this export needs the {module} package; install it with pip install 'slimlm[export]'.")
