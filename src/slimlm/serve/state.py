"""The server's state: the model being served, the teacher, the worker threads, and the atomic switch.

A request takes ``state.current`` once, when it starts, and uses that `Served` to the end; a switch loads the
new decision's model on the side and then replaces ``current`` in one assignment. So requests in flight
finish on the old model, new ones get the new model, and nothing is dropped or mixed. The old model is freed
when its last request lets go of it.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from slimlm.serve.engine import Engine
from slimlm.serve.metrics import ServerMetrics
from slimlm.serve.settings import ServeSettings
from slimlm.serve.target import ServeError, Target, load_engine, load_teacher, resolve


@dataclass
class Served:
    """One loaded operating point."""

    target: Target
    engine: Engine
    loaded_at: float = field(default_factory=time.time)

    @property
    def number(self) -> int | None:
        return self.target.number


class ServerState:
    """Everything the routes share.

    Args:
        path: the run directory or variant directory given to ``slimlm serve``.
        settings: `ServeSettings`.
        decision: serve this decision number instead of the latest.
        trust_remote_code: passed to model loading.
    """

    def __init__(self, path: str | Path, settings: ServeSettings | None = None, *, decision: int | None = None,
                 trust_remote_code: bool = False):
        from slimlm.serve.drift import Canary, Shadow

        self.path = Path(path)
        self.settings = settings or ServeSettings()
        self.trust_remote_code = trust_remote_code
        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        target = resolve(self.path, decision)
        self.current = Served(target, load_engine(target, trust_remote_code=trust_remote_code))
        self.metrics = ServerMetrics(self.settings.cost_window)
        self.metrics.set_target(target, self.settings)
        self.executor = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="slimlm-worker")
        self.pending = 0
        self._pending_lock = threading.Lock()
        self._switch_lock = threading.Lock()
        self._teacher_lock = threading.Lock()
        self._teacher: Engine | None = None
        self._teacher_failed: str | None = None
        self.canary = Canary(self, self.metrics, self.settings)
        self.shadow = Shadow(self, self.metrics, self.settings)
        #: why the canary cannot read its data (it then reports errors until it can), for the start-up line
        self.canary_note = self.canary.check_data()

    # teacher -------------------------------------------------------------------------------------------
    def has_teacher(self) -> bool:
        return bool(self.settings.teacher or self.current.target.teacher) and self._teacher_failed is None

    def teacher(self) -> Engine | None:
        """The teacher, loaded on first use (by a background thread, never a request)."""
        if not self.has_teacher():
            return None
        with self._teacher_lock:
            if self._teacher is None:
                try:
                    self._teacher = load_teacher(self.current.target, self.settings.teacher)
                except Exception as exc:  # noqa: BLE001 - no teacher: drift falls back to recorded values
                    self._teacher_failed = f"{type(exc).__name__}: {exc}"
                    return None
            return self._teacher

    # lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.canary.start()
        self.shadow.start()

    def stop(self) -> None:
        self.canary.stop()
        self.shadow.stop()
        self.executor.shutdown(wait=True)

    # admission -----------------------------------------------------------------------------------------
    def admit(self) -> bool:
        with self._pending_lock:
            if self.pending >= self.settings.max_queue:
                return False
            self.pending += 1
        self.metrics.in_flight.inc()
        return True

    def release(self) -> None:
        with self._pending_lock:
            self.pending -= 1
        self.metrics.in_flight.dec()

    # switching -----------------------------------------------------------------------------------------
    def switch(self, number: int | None = None) -> Served:
        """Serve decision ``number`` (None: the latest recorded) of the run directory, atomically.

        Raises:
            ServeError: not serving a run directory, or the new model serves another task.
            DecisionError: no such decision.
        """
        if self.current.target.run_dir is None:
            raise ServeError("switching needs a run directory; this server was started on a variant directory.")
        with self._switch_lock:
            try:
                target = resolve(self.current.target.run_dir, number)
                engine = load_engine(target, trust_remote_code=self.trust_remote_code)
                if engine.task != self.current.engine.task:
                    raise ServeError(f"decision {target.number} serves a {engine.task} model but this server serves "
                                     f"{self.current.engine.task}; start another server for it.")
            except Exception:
                self.metrics.switches.labels(outcome="failed").inc()
                raise
            new = Served(target, engine)
            self.current = new  # the switch: one reference assignment
            self.metrics.set_target(target, self.settings)
            self.shadow.reset()
            self.canary.kick()
            self.metrics.switches.labels(outcome="ok").inc()
            return new
