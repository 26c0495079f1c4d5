"""The multi-objective search: an Optuna study whose trials are recipes run through the cached pipeline.

Objectives (all minimised): the relative quality drop, plus one or more costs. Latency and energy enter
as ratios to the baseline *measured in the same interleaved profile* as the trial's variant, so a trial
that ran while the machine was busy is not penalised; size and memory are absolute (MB). At the end the
frontier's variants are profiled again side by side with the baseline so that the report's numbers are
comparable with each other.

Several workers (processes, machines) share a study by pointing at the same ``storage`` (SQLite by default,
in the run directory; any SQLAlchemy URL such as ``postgresql://...`` works) and ``study`` name. The trial
budget is exact, a worker killed mid-trial has its trial retried once, and workers may start together:
see `slimlm.search.workers`. Multi-fidelity: a trial's distillation reports its eval curve and a hopeless
trial is pruned before its distillation ends (`slimlm.search.pruning`).

With ``RunOptions.runtime`` other than torch every trial is profiled on that runtime (its export beside the
baseline's, `slimlm.recipes.pipeline`). A trial whose quantization the runtime has no equivalent for is
pruned before any stage runs, and one whose export fails its check is pruned after; neither counts to the
budget, and the reason is in the trial's ``not_measured_on_runtime`` attribute.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

from slimlm.errors import ConfigError
from slimlm.recipes.pipeline import Pipeline, RunOptions
from slimlm.runs import Metrics
from slimlm.search import workers
from slimlm.search.frontier import OBJECTIVES
from slimlm.search.pruning import trial_reporter
from slimlm.search.space import Space

#: objectives whose metric comes from profiling (``--no-profile`` measures quality and disk size only)
PROFILED = ("latency", "memory", "energy")


def parse_duration(text: str | None) -> float | None:
    """``30m``, ``2h``, ``90s`` or plain seconds -> seconds."""
    if text is None:
        return None
    t = str(text).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(t[:-1]) * units[t[-1]] if t[-1] in units else float(t)
    except (ValueError, IndexError):
        raise ConfigError(f"--timeout {text!r} is not a duration; use e.g. 90s, 30m or 2h.") from None


def _objective_value(metrics: Metrics, objective: str, primary: str) -> float | None:
    if objective == "latency":
        s = metrics.speedup(primary)
        return 1 / s if s else None
    if objective == "energy":
        return metrics.ratios.get("energy")
    return metrics.number(OBJECTIVES[objective])


def search(
    model: str,
    space: Space,
    out: str | Path,
    *,
    trials: int,
    objectives: tuple[str, ...] = ("latency",),
    storage: str | None = None,
    study_name: str = "slimlm",
    timeout_s: float | None = None,
    options: RunOptions | None = None,
    seed: int = 0,
    progress: Callable | None = None,
    log: Callable[[str], None] | None = None,
    after_trial: Callable[[Pipeline], None] | None = None,
    expand: tuple[str, ...] = ("quantize",),
    heartbeat_s: int = 10,
) -> dict:
    """Run (or join) a study until ``trials`` trials are complete or ``timeout_s`` passes.

    Args:
        model: baseline model spec.
        space: a `Space` (see `slimlm.search.space`).
        out: the run directory (shared by all workers of the study).
        trials: total complete trials wanted across all workers.
        objectives: costs besides quality drop: ``latency``, ``size``, ``memory``, ``energy``.
        storage: an SQLAlchemy URL; default ``sqlite:///<out>/study.db``.
        study_name: the study to create or join.
        timeout_s: stop starting new trials after this many seconds (the best so far is saved).
        after_trial: called after each trial with the pipeline (the CLI writes the report there).
        expand: cost-aware sampling: after a trial completes, its siblings that differ only in these keys are
            queued next (skipped when already tried). Quantization is the last and cheapest stage, so its
            siblings reuse the cached prune and distill outputs the trial paid for. A new study's first trial
            is every key's first value. ``()`` turns both off (pure sampler).

    Returns:
        ``{"study", "storage", "completed", "ran_here", "pruned", "trials": [{"number", "params", "variant",
        "values"}]}`` (``pruned``: trials stopped early by the pruner, in the whole study).
    """
    import optuna
    from optuna.trial import TrialState

    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad or not objectives:
        raise ConfigError(f"--objectives {','.join(bad) or '(none)'}: use one or more of {', '.join(OBJECTIVES)}.")
    if trials < 1:
        raise ConfigError("--trials must be at least 1.")
    unmeasured = [o for o in objectives if o in PROFILED] if options is not None and not options.profile else []
    if unmeasured:  # every trial would fail at the end, after its compression work
        raise ConfigError(f"--objectives {','.join(unmeasured)} needs profiling, which --no-profile turns off; "
                          "use --objectives size, or drop --no-profile.")
    if storage:
        workers.check_url(storage)
    log = log or (lambda m: None)
    out = Path(out)
    p = Pipeline(model, out, options, progress=progress, log=log)
    space, dropped = space.fit(p.base)
    for why in dropped:  # e.g. the builtin space's layers=6 on a 6-layer encoder
        log(f"space {space.name}: left out {why}")
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = workers.unique_sampler(
        optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(6, trials // 2))), list(space.choices))
    pruner = space.pruner.make()  # multi-fidelity: see slimlm.search.pruning
    store = workers.open_storage(url, heartbeat_s)
    study = workers.open_study(store, study_name, ["minimize"] * (1 + len(objectives)), sampler)
    lock = out / ".study.lock"
    with workers.study_lock(store, url, study_name, lock):
        if study.metric_names is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental API
                study.set_metric_names(["quality_drop", *objectives])
        if expand and not study.get_trials(deepcopy=False):
            # a new study starts at the cheapest corner (every key at its first value, the space's "off" by
            # convention): with its expanded siblings that is quantization alone, the likeliest variants
            # inside a tight quality tier
            study.enqueue_trial({k: v[0] for k, v in space.choices.items()}, user_attrs={"start": True})
    p.write_state([], extra={"objectives": ["quality_drop", *[OBJECTIVES[o] for o in objectives]],
                             "search": {"study": study_name, "storage": url, "space": space.name,
                                        "trials": trials}})
    primary = "x".join(map(str, p.opts.shapes[0]))
    start = time.monotonic()
    ran = failed = 0
    max_failures = max(3, trials)
    while True:
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            log(f"time budget reached after {ran} trial(s) here; the best so far is saved")
            break
        with workers.study_lock(store, url, study_name, lock):
            state, trial, params, beat = workers.claim_trial(study, trials, space.choices)
        if state == "done":
            break
        if state == "wait":  # the last slots run elsewhere: wait for them (or their heartbeats to stop)
            time.sleep(min(2.0, heartbeat_s))
            continue
        recipe = space.build(params)
        log(f"trial {trial.number}: " + (" → ".join(s.label() for s in recipe.stages) if recipe else "baseline"))
        why = _runtime_refuses(recipe, p.opts.runtime) if p.opts.profile else None
        if why:  # known before any stage runs: the deployment runtime has no equivalent of its quantization
            beat.__exit__(None, None, None)
            trial.set_user_attr("not_measured_on_runtime", why)
            study.tell(trial, state=TrialState.PRUNED)
            log(f"trial {trial.number}: skipped: {why}")
            continue
        try:
            report = trial_reporter(study, trial, pruner, log)
            vid = p.run_recipe(recipe, record_intermediate=False, on_metrics=report)[-1] if recipe else p.base_id
            p.evaluate_all([vid])
            if p.opts.profile and not p.variants[vid].metrics.latency_ms:
                p.profile_all([vid])  # a repeated pick (TPE resamples categorical spaces) reuses its measurement
            elif p.opts.profile:
                log(f"trial {trial.number}: same variant as an earlier trial; its measurements are reused")
            m = p.variants[vid].metrics
            if m.get("runtime_not_measured"):  # its export failed the check: it cannot be deployed there
                raise _NotOnRuntime(m.get("runtime_not_measured"))
            values = [m.quality_drop] + [_objective_value(m, o, primary) for o in objectives]
            if any(v is None for v in values):
                raise ConfigError(f"trial {trial.number}: an objective could not be measured ({values}).")
        except KeyboardInterrupt:
            beat.__exit__(None, None, None)
            study.tell(trial, state=TrialState.FAIL)
            raise
        except _NotOnRuntime as exc:  # kept in variants.jsonl with the reason; does not count to the budget
            beat.__exit__(None, None, None)
            trial.set_user_attr("variant", vid)
            trial.set_user_attr("not_measured_on_runtime", str(exc)[:500])
            study.tell(trial, state=TrialState.PRUNED)
            log(f"trial {trial.number}: not measured on {p.opts.runtime}: {exc}")
            p.write_state([])
            continue
        except optuna.TrialPruned:  # hopeless: its stage was not cached, and it does not count to the budget
            beat.__exit__(None, None, None)
            study.tell(trial, state=TrialState.PRUNED)
            continue
        except Exception as exc:  # noqa: BLE001 - a failed trial must not lose the study; it is recorded
            beat.__exit__(None, None, None)
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            study.tell(trial, state=TrialState.FAIL)
            log(f"trial {trial.number} failed: {type(exc).__name__}: {exc}")
            failed += 1
            if failed >= max_failures:  # a systematic error: stop instead of failing forever
                raise ConfigError(f"{failed} trials failed in this worker; the last: {type(exc).__name__}: "
                                  f"{exc}. See the study's trial attributes for all errors.") from exc
            continue
        beat.__exit__(None, None, None)
        trial.set_user_attr("variant", vid)
        study.tell(trial, values)
        _queue_siblings(study, space, params, expand, trial.number)
        ran += 1
        p.write_state([])
        if after_trial:
            after_trial(p)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if p.opts.profile and complete:
        _reprofile_frontier(p, [t.user_attrs.get("variant") for t in complete])
    p.write_state([])
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    return {"study": study_name, "storage": url, "completed": len(complete), "ran_here": ran, "pruned": len(pruned),
            "stage_seconds_run": p.stage_seconds_run,
            "trials": [{"number": t.number, "params": t.params, "variant": t.user_attrs.get("variant"),
                        "values": t.values} for t in complete]}


class _NotOnRuntime(Exception):
    """The trial's variant could not be profiled on the run's deployment runtime (the reason)."""


def _runtime_refuses(recipe, runtime: str) -> str | None:
    """Why ``runtime`` cannot take the recipe's quantization scheme (known before running it), else None."""
    from slimlm.export.runtimes import CANNOT, EQUIVALENT

    if runtime == "torch" or recipe is None:
        return None
    scheme = None
    for stage in recipe.stages:
        if stage.kind == "quantize":
            cfg = stage.config
            scheme = getattr(getattr(cfg, "target", None), "scheme", None) or getattr(cfg, "scheme", None)
    if scheme in EQUIVALENT[runtime]:
        return None
    return f"{runtime} cannot run slimlm's {scheme} variant as it is: {CANNOT[runtime]}"


def _queue_siblings(study, space: Space, params: dict, keys: tuple[str, ...], number: int) -> None:
    """Queue the picks that differ from ``params`` only in ``keys`` (Optuna skips those already tried)."""
    for key in keys:
        for value in space.choices.get(key, []):
            if value != params.get(key, value):
                study.enqueue_trial({**params, key: value}, user_attrs={"sibling_of": number}, skip_if_exists=True)


def _reprofile_frontier(p: Pipeline, ids: list[str | None]) -> None:
    """Profile the frontier's variants side by side with the baseline, so the report compares like with like."""
    from slimlm.search.frontier import pareto_front

    variants = [p.variants[i] for i in dict.fromkeys(ids) if i and i in p.variants]
    if not variants:
        return
    objs = ["quality_drop", "latency_p50_ms"]
    front = [variants[i].id for i in pareto_front(variants, objs)]
    front = [i for i in front if i != p.base_id]
    if front:
        p.profile_all(front)
