"""The ``slimlm quantize`` job: check the output path, load, calibrate if the scheme asks, quantize, save."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from slimlm._io import check_out
from slimlm.errors import ConfigError


def quantize_job(model: str, config, out: str | Path, *, data: str | None = None, calib_rows: int = 32,
                 calib_len: int = 512, seed: int = 0, force: bool = False, trust_remote_code: bool = False,
                 resume: bool = False, max_seconds: float | None = None, progress: Callable | None = None,
                 log: Callable[[str], None] | None = None) -> dict:
    """Quantize ``model`` with ``config`` and save the variant to ``out``.

    Args:
        model: model spec.
        config: a quantization config (`slimlm.quantize.parse_config`).
        out: variant directory (an earlier slimlm variant is replaced only with ``force``).
        data: calibration data spec (needed by GPTQ, SmoothQuant, the fallback and QAT).
        calib_rows, calib_len, seed: the calibration sample.
        resume: QAT: continue from the checkpoint in ``OUT.checkpoint`` (written every ``checkpoint_every`` steps,
            removed once the variant is saved). When ``out`` already holds this run's variant (stopped after
            saving it, before removing the checkpoint), that variant is the result (``already_finished``).
        max_seconds: QAT: the training time budget. Past it, training stops at the next step, writes its
            checkpoint and saves no variant: the result has ``"finished": False``, ``"out_of_time"`` (the
            step) and ``"checkpoint"``; the same call with ``resume`` continues it.
        progress, log: callbacks.

    Returns:
        ``{"out", "params_before", "params_after", "seconds", "scheme", "weights_mb", ...report}``.
    """
    from slimlm._jobs import check_budget, checkpoint_dir_for, finished_result, unfinished_result
    from slimlm.data import calibration_batch, load_data
    from slimlm.models import load
    from slimlm.quantize import check_config, logical_params, quantize_, save

    start = time.perf_counter()
    qat = getattr(config, "scheme", None) == "qat"
    if not qat and max_seconds is not None:
        raise ConfigError("--max-minutes limits QAT's training (--qat-steps N); PTQ does not train.")
    check_budget(max_seconds)
    if qat and resume and not force and (done := finished_result(Path(out), model, None, data, config, kind="quantize")):
        if log:
            log(f"{out} already holds this run's variant (it finished before it was stopped); nothing to resume")
        return {**done, "scheme": config.scheme}
    out = check_out(out, force=force, kind="variant")
    ckpt = None
    if qat:  # also without checkpoints of its own: an earlier run's checkpoint is never trained over unseen
        ckpt = checkpoint_dir_for(out, resume)
    elif resume:
        raise ConfigError("--resume continues a QAT run (--qat-steps with --checkpoint-every or --max-minutes); "
                          "PTQ has nothing to resume.")
    corpus = load_data(data) if data else None
    m = load(model, progress=log, trust_remote_code=trust_remote_code)
    check_config(m, config)
    params_before = m.num_params()
    calib = calibration_batch(m.tokenizer, corpus, calib_rows, calib_len, seed=seed) if corpus is not None else None
    report = quantize_(m, config, calib, progress=progress, checkpoint_dir=ckpt, max_seconds=max_seconds)
    stopped = (report.get("qat") or {}).get("out_of_time")
    if stopped is not None:  # half-trained: no variant until a resumed run finishes
        return unfinished_result(out, ckpt, params_before, m, start, {"scheme": config.scheme, "out_of_time": stopped,
                                                                 "qat": report["qat"]})
    path = save(m, out, config, report, data=data)
    if ckpt is not None:  # the saved variant supersedes it (slimlm's own: checkpoint_dir_for refuses others)
        shutil.rmtree(ckpt, ignore_errors=True)
    weights_mb = sum(p.stat().st_size for p in path.rglob("*.safetensors")) / 2**20
    scheme = getattr(config, "scheme", None)
    return {"out": str(path), "params_before": params_before, "params_after": logical_params(m.hf),
            "seconds": time.perf_counter() - start, "scheme": scheme, "weights_mb": weights_mb,
            **{k: v for k, v in report.items() if k not in ("scheme", "seconds")}}
