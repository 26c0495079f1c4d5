"""Tracking: copy a run directory into an experiment tracker (MLflow) to compare runs across machines and time.

The run directory stays the source of truth; tracking only copies it. One parent run per run directory
(``run.json`` settings as params, the operating point as tags, ``report.html``, ``decision.md``,
``variants.jsonl`` and ``run.json`` as artifacts) and one nested run per measured variant (identity, path and
flattened stage configs as params; every numeric metric, with dotted names such as ``latency_ms.1x128.p99``;
distillation curves as metric histories; the variant's record as ``variant.json``). Logging again makes a new
parent run; nothing is updated in place.

Trade-off: we drive `MlflowClient` with explicit run ids rather than the fluent ``mlflow.start_run`` API, so
tracking neither needs nor disturbs a run the caller has active, at the cost of linking parent and child runs
and closing them by hand. MLflow is imported lazily and lives behind the ``track`` extra.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from slimlm.errors import SlimlmError
from slimlm.report.run import Run, load_run
from slimlm.runs import Variant
from slimlm.search.frontier import TIERS, parse_drop, saved_ood_guard, select

BACKENDS = ("mlflow",)
_INSTALL = "pip install 'slimlm[track]'"
_MAX_VALUE = 500  # the smallest param-value limit among MLflow 2.x stores; the full record is an artifact
_BAD_KEY = re.compile(r"[^\w.\- ]")  # MLflow keys: alphanumerics, underscores, dashes, periods, spaces
_MAX_NOTE = 5000  # MLflow 2.x's tag-value limit
_ARTIFACTS = ("report.html", "decision.md", "variants.jsonl", "run.json", "sensitivity.json")


class TrackingError(SlimlmError):
    """A tracking backend that is unknown, not installed, or that refused what we logged."""


def check_backend(backend: str) -> None:
    """Fail fast, before any heavy work, when ``backend`` is unknown or its package cannot be imported.

    Raises:
        TrackingError: with the fix (``pip install 'slimlm[track]'``) when MLflow is missing.
    """
    if backend not in BACKENDS:
        raise TrackingError(f"--track {backend!r} is not a tracking backend; use one of: {', '.join(BACKENDS)}.")
    _mlflow()


def _mlflow():
    try:
        import mlflow
    except ImportError as exc:
        raise TrackingError(f"MLflow tracking needs the mlflow package ({exc}); install it with "
                            f"`{_INSTALL}`.") from None
    return mlflow


def default_tracking_uri(run_dir: str | Path) -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else an SQLite store inside the run directory (``RUN_DIR/mlflow.db``).

    Not MLflow's file store (``./mlruns``): MLflow 3 refuses it unless told otherwise, and both would land in
    the current directory rather than beside the run.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or _own_store(run_dir)


def _own_store(run_dir: str | Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def _key(name: str) -> str:
    return _BAD_KEY.sub("_", name)[:250]


def _text(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= _MAX_VALUE else s[: _MAX_VALUE - 1] + "…"


def _flatten(obj: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """Nested dicts to ``(dotted.key, leaf)``; lists stay leaves."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, obj


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _variant_params(v: Variant, run_dir: Path) -> dict[str, str]:
    path = v.path
    if path and not Path(path).is_absolute() and (run_dir / path).exists():
        path = str((run_dir / path).resolve())
    params = {"variant_id": v.id, "label": v.label or v.id, "parent": v.parent,
              "is_baseline": bool(v.is_baseline), "path": path, "stages": len(v.stages)}
    for i, stage in enumerate(v.stages):
        params.update(_flatten(stage, f"stages.{i}"))
    for k, val in _flatten(v.metrics.to_dict(), ""):  # non-numeric measurements, e.g. energy_source
        if isinstance(val, str):
            params[k] = val
    return {_key(k): _text(val) for k, val in params.items()}


def _variant_metrics(v: Variant) -> dict[str, float]:
    fields = {"metrics": v.metrics.to_dict(), "recovery": v.recovery, "stage_seconds": v.seconds}
    out = {}
    for k, val in _flatten(fields, ""):
        x = _number(val)
        if x is not None:
            out[_key(k.removeprefix("metrics."))] = x
    return out


def _curves(v: Variant) -> Iterator[tuple[str, float, int]]:
    """``curves: {name: {"step": [...], metric: [...]}}`` as ``(key, value, step)`` points."""
    for name, curve in v.curves.items():
        steps = curve.get("step") or []
        for metric, ys in curve.items():
            if metric == "step" or not isinstance(ys, list):
                continue
            for s, y in zip(steps, ys, strict=False):
                if _number(y) is not None and isinstance(s, int):
                    yield _key(f"curves.{name}.{metric}"), float(y), s


def _operating_point(run: Run) -> dict:
    """The selection recorded in ``run.json`` (as `write_report` applies it when given no overrides)."""
    saved = run.info.get("selection") or {}
    drop = parse_drop(saved["max_drop"], recorded=True) if saved.get("max_drop") is not None else TIERS[saved.get("tier") or "medium"]
    return select(run.variants, max_drop=drop, objective=saved.get("objective") or "latency",
                  max_latency_ms=saved.get("max_latency_ms"), max_memory_mb=saved.get("max_memory_mb"),
                  max_ood_drop=saved_ood_guard(saved)).to_dict()


def track_run(run_dir: str | Path, backend: str = "mlflow", tracking_uri: str | None = None,
              experiment: str | None = None, summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Log a run directory to MLflow: a parent run, one nested run per measured variant, the report files.

    Args:
        run_dir: a directory written by ``slimlm compress`` / ``slimlm search`` (``variants.jsonl`` at least).
        backend: ``"mlflow"`` (the only one so far).
        tracking_uri: where to log; default `default_tracking_uri` (``$MLFLOW_TRACKING_URI``, else
            ``sqlite:///RUN_DIR/mlflow.db`` with artifacts in ``RUN_DIR/mlartifacts``), so nothing is
            written outside the run directory unless asked.
        experiment: experiment name; default ``$MLFLOW_EXPERIMENT_NAME``, else ``slimlm``.
        summary: what `write_report` returned, for the operating-point tags; when None, the selection
            recorded in ``run.json`` is applied again.

    Returns:
        ``{"backend", "tracking_uri", "experiment", "experiment_id", "run_id", "variant_runs": {id: run_id}}``.

    Raises:
        RunDirError: the directory has no (valid) ``variants.jsonl``.
        TrackingError: MLflow is missing, or the tracking store refused a call.

    Example:
        >>> track_run("runs/quick", tracking_uri="http://mlflow.internal:5000")["run_id"]
    """
    check_backend(backend)
    run = load_run(run_dir)
    uri = tracking_uri or default_tracking_uri(run.dir)
    name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "slimlm"
    point = dict(summary) if summary is not None else _operating_point(run)
    mlflow = _mlflow()
    from mlflow.entities import Metric, Param, RunTag

    def log(run_id: str, params: Mapping[str, str], metrics: Mapping[str, float], tags: Mapping[str, str],
            history: Sequence[tuple[str, float, int]] = ()) -> None:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()]
                         + [Metric(k, v, now, s) for k, v, s in history],
                         params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])

    parent_id = None
    try:
        client = mlflow.MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            exp_id = exp.experiment_id
        else:  # in our own store, artifacts stay in the run directory too (MLflow's default is ./mlruns)
            own = uri == _own_store(run.dir)
            exp_id = client.create_experiment(
                name, artifact_location=(run.dir.resolve() / "mlartifacts").as_uri() if own else None)
        parent_id = client.create_run(exp_id, run_name=run.dir.resolve().name).info.run_id
        info = {k: v for k, v in run.info.items() if k not in ("machine", "created", "updated")}
        frontier = set(point.get("frontier") or ())
        tags = {"slimlm.run_dir": str(run.dir.resolve()), "slimlm.selected": point.get("selected") or "",
                "slimlm.closest": point.get("closest") or "", "slimlm.met": str(bool(point.get("met"))).lower(),
                "slimlm.rule": point.get("rule") or "",
                **{_key(k): _text(v) for k, v in _flatten(run.info.get("machine") or {}, "machine")}}
        tags = {k: v for k, v in tags.items() if v}
        if (run.dir / "decision.md").is_file():  # shown as the run's description in the MLflow UI
            tags["mlflow.note.content"] = (run.dir / "decision.md").read_text(encoding="utf-8")[:_MAX_NOTE]
        hv = _number(point.get("hypervolume"))
        log(parent_id, {_key(k): _text(v) for k, v in _flatten(info, "")},
            {"variants": float(len(run.variants)), **({"hypervolume": hv} if hv is not None else {})}, tags)
        for f in _ARTIFACTS:
            if (run.dir / f).is_file():
                client.log_artifact(parent_id, str(run.dir / f))
        children = {}
        for v in run.variants:
            if not v.metrics.measured:
                continue  # a stage output nobody measured (a prefix cached for another recipe)
            vid = str(v.id)
            child = client.create_run(exp_id, run_name=str(v.label or vid),
                                      tags={"mlflow.parentRunId": parent_id}).info.run_id
            vtags = {"slimlm.variant_id": vid, "slimlm.baseline": str(bool(v.is_baseline)).lower(),
                     "slimlm.operating_point": str(vid == point.get("selected")).lower()}
            if "frontier" in point:
                vtags["slimlm.frontier"] = str(vid in frontier).lower()
            log(child, _variant_params(v, run.dir), _variant_metrics(v), vtags, list(_curves(v)))
            client.log_dict(child, v.to_dict(), "variant.json")
            client.set_terminated(child)
            children[vid] = child
        client.set_terminated(parent_id)
    except Exception as exc:  # noqa: BLE001 - any store or network failure: one line, the run dir is intact
        if parent_id is not None:
            with contextlib.suppress(Exception):
                client.set_terminated(parent_id, "FAILED")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TrackingError(f"logging {run.dir} to MLflow at {uri} failed ({type(exc).__name__}: {first}); the "
                            f"run directory is intact: log it again with `slimlm report {run.dir} --track mlflow "
                            "--tracking-uri URI`.") from exc
    return {"backend": backend, "tracking_uri": uri, "experiment": name, "experiment_id": exp_id,
            "run_id": parent_id, "variant_runs": children}
