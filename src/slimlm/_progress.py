"""Progress reporting without printing: library code calls ``progress(desc, done, total)``.

The CLI passes a callback that drives rich progress bars; library callers pass nothing (``None``) or their
own function. This keeps library functions free of I/O and of global state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class ProgressFn(Protocol):
    def __call__(self, desc: str, done: int, total: int) -> None: ...


def noop(desc: str, done: int, total: int) -> None:
    return None


def or_noop(progress: ProgressFn | Callable | None) -> ProgressFn:
    return progress or noop
