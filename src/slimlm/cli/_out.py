"""CLI output: JSON on stdout for ``--json``; rich tables on stdout and progress bars on stderr otherwise."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

out = Console(width=None if sys.stdout.isatty() else 160)  # logs and pipes get wide tables
err = Console(stderr=True)


def _clean(obj):
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def emit_json(data) -> None:
    sys.stdout.write(json.dumps(_clean(data), indent=2, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator:
    """Yield a ``progress(desc, done, total)`` callback drawing one rich bar per ``desc`` on stderr."""
    if not enabled or not err.is_terminal and not _force():
        yield _status_only
        return
    bars = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err, transient=True)
    tasks: dict[str, int] = {}

    def update(desc: str, done: int, total: int) -> None:
        if desc not in tasks:
            tasks[desc] = bars.add_task(desc, total=total)
        bars.update(tasks[desc], completed=done, total=total)

    with bars:
        yield update


_last: dict[str, int] = {}


def _status_only(desc: str, done: int, total: int) -> None:
    """Without a terminal, print a line at 0%, every 25% and 100% so logs show where a run is."""
    q = 4 * done // max(total, 1)
    if _last.get(desc) != q:
        _last[desc] = q
        err.print(f"{desc}: {done}/{total}", highlight=False)


def _force() -> bool:
    import os

    return os.environ.get("SLIMLM_PROGRESS") == "1"


def measure_table(title: str):
    """A two-column ``measure | value`` table, the plain result view of a one-model command."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    return table


def status(msg: str) -> None:
    err.print(f"[dim]{msg}[/dim]")


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:,.{digits - 1}f}" if abs(v) < 100 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
