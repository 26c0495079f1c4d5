"""The end-to-end jobs behind ``slimlm compress`` and ``slimlm search``: run, select, report, track.

Each is one library call that a script, a notebook or the CLI makes the same way: the CLI only parses its
options into these arguments and prints what comes back. The steps below it stay usable on their own
(`slimlm.recipes.pipeline.compress` runs recipes without a report, `slimlm.search.search` runs a study,
`slimlm.report.write_report` re-renders a run directory).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimlm._io import has_stage_output, prepare_run_dir, remove_on_error
from slimlm.errors import ConfigError
from slimlm.runs import RunDir, Variant


@dataclass(frozen=True)
class Selection:
    """How the operating point is chosen: a tier (or an explicit bar), an objective, optional SLOs, and the
    out-of-domain guard ``max_ood_drop`` (``"10%"``, ``0.1``; ``"none"`` turns it off; None: the default,
    `slimlm.search.DEFAULT_MAX_OOD_DROP`)."""

    tier: str | None = None
    max_drop: str | float | None = None
    objective: str = "latency"
    max_latency_ms: float | None = None
    max_memory_mb: float | None = None
    max_ood_drop: str | float | None = None

    def settings(self) -> dict:
        """The resolved rule as stored in ``run.json`` (``tier`` or ``max_drop``, objective, SLOs, and
        ``max_ood_drop``: a fraction, or null when the guard is off)."""
        from slimlm.search import TIERS, parse_drop, parse_ood_drop
        from slimlm.search.frontier import OBJECTIVES

        if self.tier is not None and self.tier not in TIERS:
            raise ConfigError(f"--tier {self.tier!r} is not a tier; use one of {', '.join(TIERS)} (or --max-drop).")
        if self.objective not in OBJECTIVES:  # here, before any work, not when the report is written at the end
            raise ConfigError(f"--objective {self.objective!r} is unknown; use one of {', '.join(OBJECTIVES)}.")
        drop = parse_drop(self.max_drop) if self.max_drop is not None else TIERS[self.tier or "medium"]
        return {"tier": self.tier if self.max_drop is None else None, "max_drop": drop,
                "objective": self.objective, "max_latency_ms": self.max_latency_ms,
                "max_memory_mb": self.max_memory_mb, "max_ood_drop": parse_ood_drop(self.max_ood_drop)}


@dataclass(frozen=True)
class Business:
    """Inputs that turn measurements into money and CO2e in the report."""

    traffic_per_day: float = 100_000
    price_per_hour: float = 0.10
    grid_gco2_per_kwh: float = 475.0


@dataclass(frozen=True)
class Tracking:
    """Optional experiment tracking: ``backend`` ``mlflow`` (or None), ``uri`` its tracking URI."""

    backend: str | None = None
    uri: str | None = None

    def check(self) -> None:
        """Fail before any heavy work when tracking was asked for and cannot happen."""
        from slimlm.report.tracking import TrackingError, check_backend

        if self.backend is None:
            if self.uri is not None:
                raise TrackingError("--tracking-uri needs --track mlflow; add it, or drop --tracking-uri.")
            return
        check_backend(self.backend)

    def log(self, run_dir: str | Path, summary: dict) -> dict | None:
        """Log the run directory to the tracker after its report is written; None when not asked to."""
        if self.backend is None:
            return None
        from slimlm.report.tracking import track_run

        return track_run(run_dir, backend=self.backend, tracking_uri=self.uri, summary=summary)


@dataclass
class RunResult:
    """What a compress or search run ended with: every variant, the frontier, the operating point, files."""

    out: Path
    variants: list[Variant]
    report: dict
    tracking: dict | None = None
    study: dict | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document (keys documented in the README)."""
        r = self.report
        doc = {"out": str(self.out), "variants": [v.to_dict() for v in self.variants], "frontier": r["frontier"],
               "selected": r["selected"], "met": r["met"], "closest": r["closest"], "rule": r["rule"],
               "hypervolume": r["hypervolume"], "guard": r["guard"], "excluded_by_guard": r["excluded_by_guard"],
               "runtime": self.runtime(), "warnings": r.get("warnings", []),
               "report": r["report"], "decision": r["decision"]}
        if self.study is not None:
            doc["study"] = self.study
        if self.tracking:
            doc["tracking"] = self.tracking
        return doc


    def runtime(self) -> dict:
        """Where the latencies were measured: ``{"name", "label", "threads", "not_measured": {variant id: reason}}``."""
        info = self.report.get("runtime") or RunDir(self.out).info().get("runtime") or {"name": "torch", "threads": None}
        skipped = {v.id: v.metrics.get("runtime_not_measured") for v in self.variants
                   if v.metrics.get("runtime_not_measured")}
        return {**info, "not_measured": skipped}


def _check_runtime(options) -> None:
    """Fail before any work when ``options.runtime`` is unknown or not installed (every runtime measures
    latency, size, peak memory and energy, so every objective is open to it)."""
    from slimlm.export.runtimes import check_runtime

    check_runtime(getattr(options, "runtime", "torch"))


def _check_report_files(out: str | Path) -> None:
    """A report.html or decision.md edited since slimlm wrote it fails the run now, not after the work."""
    from slimlm._io import check_unedited, written_lock

    out = Path(out)
    if not ((out / "report.html").is_file() or (out / "decision.md").is_file()):
        return  # nothing to check yet (and no lock file to leave in a directory not yet a run)
    with written_lock(out):  # another search worker may be rewriting them now
        check_unedited([out / "report.html", out / "decision.md"],
                       fix=f"rename it, or replace it with `slimlm report {out} --force`, then run this again")


def _finish(out: Path, settings: dict, business: Business, tracking: Tracking) -> tuple[dict, dict | None]:
    from slimlm.report import write_report
    from slimlm.search.frontier import ood_guard_option

    rep = write_report(out, traffic_per_day=business.traffic_per_day, price_per_hour=business.price_per_hour,
                       grid_gco2_per_kwh=business.grid_gco2_per_kwh, tier=settings["tier"],
                       max_drop=settings["max_drop"] if settings["tier"] is None else None,
                       objective=settings["objective"], max_latency_ms=settings["max_latency_ms"],
                       max_memory_mb=settings["max_memory_mb"],
                       max_ood_drop=ood_guard_option(settings["max_ood_drop"]))
    return rep, tracking.log(out, rep)


def compress(model: str, recipes: Sequence[str], out: str | Path, options=None, *,
             selection: Selection = Selection(), business: Business = Business(), tracking: Tracking = Tracking(),
             progress: Callable | None = None, log: Callable[[str], None] | None = None,
             force: bool = False) -> RunResult:
    """Run recipes on ``model`` in run directory ``out``, measure every variant, select and report.

    Args:
        model: model spec of the baseline (the teacher).
        recipes: builtin recipe names or YAML files; all are validated before any heavy work.
        out: the run directory (rerun the same call to resume).
        options: `slimlm.recipes.pipeline.RunOptions` (data, evaluation budget, profile shapes...).
        selection: the operating-point rule.
        business: traffic, price and grid intensity for the report.
        tracking: optional MLflow logging.
        progress: ``progress(desc, done, total)`` for long steps; ``log(message)`` for status lines.
        force: discard an earlier run in ``out`` and start over (``out`` must otherwise be new, empty, or a
            run directory to resume; see `slimlm._io.check_out`).

    Returns:
        A `RunResult`.

    Example:
        >>> res = compress("tiny:llama", ["int8-only"], "runs/demo")  # doctest: +SKIP
        >>> res.report["selected"]  # doctest: +SKIP
    """
    from slimlm.recipes import load_recipe
    from slimlm.recipes.pipeline import compress as run_recipes

    tracking.check()
    settings = selection.settings()
    _check_runtime(options)
    loaded = [load_recipe(r) for r in recipes]
    _check_report_files(out)
    out = prepare_run_dir(out, force)
    with remove_on_error(out, keep=lambda: has_stage_output(out)):  # a failed fresh run leaves nothing
        p = run_recipes(model, loaded, out, options, progress=progress, log=log)
    p.write_state([r.name for r in loaded], extra={"selection": settings})
    rep, logged = _finish(Path(out), settings, business, tracking)
    return RunResult(Path(out), RunDir(out).variants(), rep, logged)


def search(model: str, space: str, out: str | Path, options=None, *, trials: int = 12,
           objectives: Sequence[str] = ("latency",), storage: str | None = None, study: str = "slimlm",
           timeout: str | float | None = None, seed: int = 0, expand: str | Sequence[str] = ("quantize",),
           selection: Selection = Selection(), business: Business = Business(), tracking: Tracking = Tracking(),
           progress: Callable | None = None, log: Callable[[str], None] | None = None,
           heartbeat_s: int = 10, force: bool = False) -> RunResult:
    """Search a space of recipes with a multi-objective Optuna study; select and report (after every trial
    too, so the best so far is always on disk).

    Args:
        model: model spec of the baseline.
        space: ``builtin`` or a space YAML file (`slimlm.search.space`).
        out: the run directory, shared by every worker of the study.
        options: `RunOptions`.
        trials: complete trials wanted across all workers.
        objectives: costs besides quality: ``latency``, ``size``, ``memory``, ``energy``.
        storage: an SQLAlchemy URL (default SQLite in ``out``); ``study`` the study name.
        timeout: stop starting new trials after this long (``30m``, ``2h``, seconds).
        seed: sampler seed.
        expand: cost-aware sampling keys (``"quantize"``, ``"none"``, or a sequence).
        selection, business, tracking, progress, log, force: as for `compress`.
        heartbeat_s: seconds between a worker's heartbeats; a trial whose worker is silent for 3x this is
            failed and retried once by the surviving workers.

    Returns:
        A `RunResult` whose ``study`` holds the study summary.
    """
    from slimlm.search import load_space, parse_duration
    from slimlm.search import search as run_study

    tracking.check()
    settings = selection.settings()
    _check_runtime(options)
    sp = load_space(space)
    keys = tuple(k.strip() for k in (expand.split(",") if isinstance(expand, str) else expand)
                 if k.strip() and k.strip() != "none")
    bad = [k for k in keys if k not in sp.choices]
    if bad:
        raise ConfigError(f"--expand {','.join(bad)}: not a choice of space {sp.name}; use some of "
                          f"{', '.join(sp.choices)} or none.")
    timeout_s = timeout if isinstance(timeout, (int, float)) else parse_duration(timeout)

    def after(p) -> None:  # anytime: a report of the best so far after every trial
        p.write_state([], extra={"selection": settings})
        _finish(Path(out), settings, business, Tracking())

    _check_report_files(out)
    out = prepare_run_dir(out, force)
    with remove_on_error(out, keep=lambda: (out / "variants.jsonl").exists()):  # shared: keep once it started
        res = run_study(model, sp, out, trials=trials, objectives=tuple(objectives), storage=storage,
                        study_name=study, timeout_s=timeout_s, options=options, seed=seed, progress=progress,
                        log=log, after_trial=after, expand=keys, heartbeat_s=heartbeat_s)
    rep, logged = _finish(Path(out), settings, business, tracking)
    return RunResult(Path(out), RunDir(out).variants(), rep, logged, study=res)
