"""Errors a user can cause.

Every `SlimlmError` carries one sentence that says what is wrong and how to fix it; the CLI prints that
sentence and exits non-zero (``--debug`` shows the traceback). Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class SlimlmError(Exception):
    """Base class for user-facing errors: one clear sentence, including the fix."""

    exit_code = 2


class SpecError(SlimlmError):
    """A model or data spec that cannot be resolved."""


class UnsupportedModelError(SlimlmError):
    """An architecture slimlm has no family adapter for."""


class ModelFileError(SlimlmError):
    """A weights file that is missing, corrupt, truncated or unsafe to read."""


class DataError(SlimlmError):
    """Data that is empty, unreadable, or does not fit the task."""


class ConfigError(SlimlmError):
    """A method or recipe configuration that is invalid."""


class OutputError(SlimlmError):
    """An output path slimlm must not or cannot write: someone else's file or directory, or unwritable."""
