"""Many workers, one study: what lets several `slimlm search` processes (on one or many machines) share an
Optuna study without losing, repeating or overshooting trials.

- **Start together.** Creating the schema of a new database races (SQLite and PostgreSQL both fail one of
  the workers with an ``IntegrityError`` on ``alembic_version`` or a system catalogue); `open_storage` and
  `open_study` retry with a jittered back-off, and a study lock serialises the first enqueue.
- **Die mid-trial.** Every running trial sends a heartbeat (Optuna's ``heartbeat_interval``); a trial whose
  worker is silent for ``grace_period`` is failed by the next worker that looks, and Optuna's retry callback
  enqueues it once more with the same parameters (``failed_trial`` in its system attributes).
- **Exact budget, no busy loop.** A worker takes a new trial only under the study lock and only while
  ``complete + running < trials``; otherwise it waits (polling, without creating trials) until a slot frees
  or the budget is met. So the study never holds more live trials than the budget, and none is abandoned.
- **No repeats.** `UniqueSampler` wraps the real sampler: when the last parameter it draws would repeat a
  combination that is complete, running or queued, it picks a free value for that parameter instead.
  Sampling happens under the study lock, so two workers cannot draw the same combination at once.

The study lock is a PostgreSQL advisory lock for ``postgresql://`` storage (released by the server if the
worker dies), and an ``flock`` on a file in the run directory otherwise (SQLite: one machine).
"""

from __future__ import annotations

import hashlib
import random
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from slimlm._io import file_lock
from slimlm.errors import ConfigError

GRACE_FACTOR = 3  # a trial is stale after this many missed heartbeats
_ATTEMPTS = 8


def _retrying(what: str, fn):
    """Call ``fn`` until it stops failing on a concurrent-creation race (or give up with a `ConfigError`)."""
    import sqlalchemy.exc

    rng = random.Random()
    for attempt in range(_ATTEMPTS):
        try:
            return fn()
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.InternalError) as exc:
            if attempt == _ATTEMPTS - 1:
                raise ConfigError(f"{what} failed {_ATTEMPTS} times; the last error: "
                                  f"{str(exc).splitlines()[0][:200]}. Check that the database server is "
                                  "reachable and the URL is right.") from None
            time.sleep(rng.uniform(0.1, 0.5) * (attempt + 1))


def driver_url(url: str) -> str:
    """``postgresql://`` with the driver that is installed (SQLAlchemy 2.1 assumes psycopg 3; the ``search``
    extra brings psycopg2); a clear error when there is none."""
    import importlib.util

    if not url.startswith("postgresql://"):
        return url
    if importlib.util.find_spec("psycopg") is not None:
        return url
    if importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    raise ConfigError("--storage postgresql://... needs a PostgreSQL driver; install it with "
                      "pip install 'slimlm[search]' (psycopg2-binary).")


def check_url(url: str) -> None:
    """A one-line error, before any work, for a ``--storage`` URL SQLAlchemy cannot read or has no driver for."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        make_url(driver_url(url)).get_dialect()
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"--storage {url}: not a database URL SQLAlchemy can use ({str(exc).splitlines()[0]}); "
                          "give e.g. sqlite:///study.db or postgresql://user@host/db.") from None


def open_storage(url: str, heartbeat_s: int):
    """An Optuna ``RDBStorage`` with heartbeats and one retry of a dead worker's trial; safe to call from many
    workers at once on a new database."""
    import optuna
    from optuna.storages import RDBStorage

    if heartbeat_s < 1:
        raise ConfigError(f"--heartbeat {heartbeat_s}: give at least 1 second.")
    retry_cls = optuna.storages.RetryFailedTrialCallback
    url = driver_url(url)
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since v2.9
        return _retrying(f"opening the study storage {url}", lambda: RDBStorage(
            url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_s, grace_period=GRACE_FACTOR * heartbeat_s,
            heartbeat_stale_trial_callback=retry_cls(max_retry=1)))


def open_study(storage, name: str, directions: list[str], sampler):
    """Create or load study ``name``; a concurrent creation by another worker is retried, then loaded."""
    import optuna

    return _retrying(f"creating study {name!r}", lambda: optuna.create_study(
        study_name=name, storage=storage, load_if_exists=True, directions=directions, sampler=sampler))


@contextmanager
def study_lock(storage, url: str, name: str, lock_file: Path) -> Iterator[None]:
    """Exclusive across every worker of study ``name`` (see the module docstring)."""
    if not url.startswith("postgresql"):
        with file_lock(lock_file):
            yield
        return
    from sqlalchemy import text

    key = int.from_bytes(hashlib.sha256(f"slimlm-study:{name}".encode()).digest()[:8], "big", signed=True)
    with storage.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


def _taken(study, exclude: int | None = None) -> set[tuple]:
    """Parameter combinations that are complete, running, queued (a queued trial keeps them aside) or pruned
    (a hopeless recipe is not drawn again while a free one remains)."""
    from optuna.trial import TrialState

    out = set()
    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.PRUNED)
    for t in study.get_trials(deepcopy=False, states=states):
        if t.number != exclude:
            params = t.params or t.system_attrs.get("fixed_params") or {}
            out.add(tuple(sorted((k, repr(v)) for k, v in params.items())))
    return out


def unique_sampler(base, keys: list[str]):
    """Wrap ``base`` so the last of ``keys`` is re-drawn when the combination would repeat (see module doc)."""
    from optuna.samplers import BaseSampler

    class UniqueSampler(BaseSampler):
        def __init__(self) -> None:
            self.base = base

        def infer_relative_search_space(self, study, trial):
            return self.base.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.base.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, name, distribution):
            value = self.base.sample_independent(study, trial, name, distribution)
            if name != keys[-1] or not hasattr(distribution, "choices"):
                return value
            taken = _taken(study, exclude=trial.number)

            def combo(v):
                return tuple(sorted((k, repr(x)) for k, x in {**trial.params, name: v}.items()))

            if combo(value) not in taken:
                return value
            free = [c for c in distribution.choices if combo(c) not in taken]
            return random.Random(trial.number).choice(free) if free else value

        def before_trial(self, study, trial):
            self.base.before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            self.base.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.base.reseed_rng()

    return UniqueSampler()


def claim_trial(study, trials: int, choices: dict):
    """Under the study lock: fail stale trials, then take a trial if the budget has a free slot.

    Returns ``("done", None, None, None)`` when ``trials`` trials are complete, ``("wait", None, None, None)``
    when the remaining slots are all running elsewhere, or ``("run", trial, params, beat)``: the trial's
    parameters are suggested and its heartbeat ``beat`` already started (the caller stops it with
    ``beat.__exit__(None, None, None)``), so no trial is ever RUNNING without a heartbeat.
    """
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental since v2.9, unchanged since
        fail_stale_trials(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    done, running = states.count(TrialState.COMPLETE), states.count(TrialState.RUNNING)
    if done >= trials:
        return "done", None, None, None
    if done + running >= trials:
        return "wait", None, None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with Study.optimize": we run it
        trial = study.ask()
    beat = heartbeat(study, trial)
    beat.__enter__()
    params = {k: trial.suggest_categorical(k, v) for k, v in choices.items()}
    return "run", trial, params, beat


def heartbeat(study, trial):
    """The heartbeat thread of ``trial`` (a context manager; records one beat at once)."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial._trial_id, study._storage)
