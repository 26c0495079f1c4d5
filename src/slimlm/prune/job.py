"""The ``slimlm prune`` job: check the output path, load, calibrate if the method asks, prune (one shot or an
iterative schedule evaluated after every step), save the variant with what was measured."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from slimlm._io import check_out


def prune_job(model: str, config, out: str | Path, *, data: str = "shakespeare", schedule=None,
              calib_samples: int = 128, calib_seq_len: int = 512, seed: int = 0, eval_tokens: int = 0,
              force: bool = False, trust_remote_code: bool = False, progress: Callable | None = None,
              log: Callable[[str], None] | None = None) -> dict:
    """Prune ``model`` with ``config`` (following ``schedule``) and save the variant to ``out``.

    Args:
        model: model spec.
        config: a pruning config (`slimlm.prune.make_config`, `parse_structured`).
        out: variant directory (an earlier slimlm variant is replaced only with ``force``).
        data: data spec: calibration from its calibration split, perplexity on its eval split.
        schedule: a `ScheduleConfig` (one shot by default).
        eval_tokens: also measure perplexity with this budget (0: only when the schedule is iterative).

    Returns:
        ``{"out", "params_before", "params_after", "seconds", "steps", ...report}`` (and ``perplexity``).
    """
    from slimlm.data import load_data
    from slimlm.models import load, save
    from slimlm.prune import ScheduleConfig, make_calibration, run_schedule, save_kwargs

    schedule = schedule or ScheduleConfig()
    out = check_out(out, force=force, kind="variant")  # ('~' expanded, as where it is written)
    corpus = load_data(data)
    m = load(model, progress=log, trust_remote_code=trust_remote_code)
    before = m.num_params()
    evaluate_fn = None
    if eval_tokens or schedule.kind == "iterative":
        from slimlm.evaluate import evaluate

        def evaluate_fn(mod):  # a language model's perplexity, a classifier's accuracy and macro-F1
            res = evaluate(mod, corpus, max_tokens=eval_tokens or 4096)
            return {k: res[k] for k in ("perplexity", "accuracy", "f1") if res.get(k) is not None}

    start = time.perf_counter()
    calib = make_calibration(m, corpus, calib_samples, calib_seq_len, seed) if config.needs_calibration else None
    records = run_schedule(m, config, calib, schedule, evaluate=evaluate_fn, progress=progress)
    report = records[-1].pop("report")
    for r in records:
        r.pop("report", None)
    kwargs = save_kwargs(config, report, m)
    kwargs["extra"]["schedule"] = {"config": schedule.model_dump(), "steps": records}
    if records[-1].get("metrics"):
        kwargs["metrics"].update(records[-1]["metrics"])
    seconds = time.perf_counter() - start
    kwargs["metrics"]["prune_seconds"] = seconds
    save(m, out, **kwargs)
    res = {"out": str(out), "params_before": before, "params_after": m.num_params(), "seconds": seconds,
           **{k: v for k, v in report.items() if k not in ("modules", "params_before", "params_after", "seconds")},
           "steps": records}
    if records[-1].get("metrics"):
        res.update(records[-1]["metrics"])
    return res
