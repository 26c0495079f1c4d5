"""The whole distillation and fine-tuning jobs behind ``slimlm distill`` / ``slimlm finetune``: load, place on
the device (and join the process group that ``torchrun`` describes), train (one run or an iterative
prune-distill schedule), evaluate, save with provenance, and clean the checkpoint up (the checkpoint
directory, the time budget and the results of stopped runs are `slimlm._jobs`, which QAT shares).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from slimlm._device import pick_device
from slimlm._io import check_out
from slimlm._jobs import check_budget, checkpoint_dir_for, finished_result, unfinished_result
from slimlm.distill.config import DistillConfig
from slimlm.errors import ConfigError, DataError


def init_distributed() -> int:
    """Join the process group that ``torchrun`` / ``accelerate launch`` describe in the environment; return the rank.

    NCCL when this process has a GPU, gloo otherwise. Without ``WORLD_SIZE`` > 1 nothing happens (rank 0).
    """
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.get_rank() if dist.is_initialized() else 0
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return dist.get_rank()


def _eval_seq_len(model) -> int:
    return min(512, model.adapter.max_positions or 512)


def final_eval(model, corpus, tokens: int) -> dict:
    """The saved model's quality on the corpus' eval split (perplexity or accuracy/F1)."""
    from slimlm.evaluate import evaluate

    res = evaluate(model, corpus, seq_len=_eval_seq_len(model), max_tokens=tokens, max_examples=512)
    return {k: res.get(k) for k in ("perplexity", "accuracy", "f1", "ece", "tokens", "examples") if res.get(k) is not None}


def load_classifier(spec: str, num_labels: int, progress=None, trust_remote_code: bool = False):
    """``load(spec, num_labels=K)``; tiny specs take their head size as the ``labels`` option instead."""
    from slimlm.models import load

    if spec.startswith("tiny:bert") and "labels=" not in spec:
        return load(f"{spec}{'&' if '?' in spec else '?'}labels={num_labels}")
    return load(spec, progress=progress, num_labels=num_labels, trust_remote_code=trust_remote_code)


def is_encoder(spec: str, num_labels: int | None) -> bool:
    """Labelled data and a BERT-family student: load it with a classification head (new if absent)."""
    if not num_labels:
        return False
    if spec.startswith("tiny:bert") or spec == "builtin:minilm-l6":
        return True
    cfg = Path(spec) / "config.json"
    if cfg.is_file():
        try:
            return json.loads(cfg.read_text()).get("model_type") == "bert"
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            return False
    return False


def distill_job(student: str, teacher: str | None, data: str, out: str | Path, cfg: DistillConfig, *,
                schedule=None, prune=None, resume: bool = False, force: bool = False, device: str = "auto",
                trust_remote_code: bool = False,
                eval_tokens: int = 4096, max_seconds: float | None = None,
                progress: Callable | None = None, on_metrics: Callable | None = None,
                log: Callable[[str], None] | None = None) -> dict | None:
    """Distil ``teacher`` into ``student`` on ``data`` and save the student to ``out``.

    Args:
        student, teacher: model specs (the teacher is optional for ``loss="ce"``).
        data: data spec (train split for training, eval split for the curve and the final evaluation).
        out: output directory.
        cfg: a `DistillConfig`.
        schedule: an iterative schedule (`slimlm.distill.schedules.parse_schedule`) with ``prune`` its target.
        resume: continue from ``OUT.checkpoint``.
        trust_remote_code: allow the models' own Python code (``auto_map``); refused otherwise.
        force: replace an earlier slimlm variant at ``out`` (anything else there is never touched).
        device: ``auto``, ``cpu``, ``cuda:0``.
        max_seconds: a time budget; past it the run stops at a step boundary, keeps its checkpoint in
            ``OUT.checkpoint`` and writes no student (``resume`` continues it); the result says
            ``"finished": False`` and ``"out_of_time"``: the step.
        progress, on_metrics, log: progress bar, per-step metrics and status-line callbacks.

    Returns:
        ``{"out", "finished", "params_before", "params_after", "seconds", "steps", "tokens", "final_losses",
        "eval", ...}``; None on ranks other than 0 of a distributed run (rank 0 writes the result).
    """
    from slimlm.data import load_data
    from slimlm.distill.schedules import prune_distill
    from slimlm.distill.trainer import distill_run
    from slimlm.methods import StageResult
    from slimlm.models import load

    if schedule is not None and prune is None:
        raise ConfigError("--schedule iterative needs a pruning target; add --prune layers=N,ffn=F.")
    if prune is not None and schedule is None:
        raise ConfigError("--prune is the target of an iterative schedule; add --schedule iterative:steps=3 "
                          "(or prune first with slimlm prune).")
    if schedule is not None and cfg.checkpoint_every:
        raise ConfigError("--checkpoint-every is not supported with --schedule yet; run without it.")
    if schedule is not None and max_seconds is not None:
        raise ConfigError("--max-minutes is not supported with --schedule yet (a schedule cannot resume); run "
                          "without it.")
    check_budget(max_seconds)
    if cfg.uses_teacher_outputs and not teacher:
        raise ConfigError(f"--loss {cfg.loss} needs --teacher MODEL (or use --loss ce to fine-tune without one).")
    if resume and not force and (done := finished_result(Path(out), student, teacher, data, cfg, schedule, prune)):
        if log:
            log(f"{out} already holds this run's student (it finished before it was stopped); nothing to resume")
        return done
    out = check_out(out, force=force, kind="variant")
    ckpt = checkpoint_dir_for(out, resume)
    dev = pick_device(device)
    corpus = load_data(data)  # validate data before loading any weights
    num_labels = len(corpus.labels) if corpus.labels else None
    trc = trust_remote_code
    s = (load_classifier(student, num_labels, log, trc) if is_encoder(student, num_labels)
         else load(student, progress=log, trust_remote_code=trc))
    t = load(teacher, progress=log, num_labels=None, trust_remote_code=trc) if teacher else None
    if s.task == "causal-lm" and corpus.splits.get("eval"):  # final_eval's budget, checked before the training
        from slimlm.evaluate.core import perplexity_windows

        perplexity_windows(s, corpus, "eval", _eval_seq_len(s), eval_tokens, option="--eval-tokens")
    params_before = s.num_params()
    rank = init_distributed()
    s.hf.to(dev)
    if t is not None:
        t.hf.to(dev)
    start = time.perf_counter()
    if schedule is not None:
        s, records = prune_distill(s, t, corpus, prune, cfg, schedule, progress=progress, on_metrics=on_metrics)
        summary = {"steps": sum(r["distill"]["steps"] for r in records),
                   "tokens": sum(r["distill"]["tokens"] for r in records),
                   "final_losses": records[-1]["distill"]["final_losses"],
                   "eval_curve": [e for r in records for e in r["distill"]["eval_curve"]],
                   "cycles": [{k: v for k, v in r.items() if k != "distill"} for r in records]}
    else:
        res = distill_run(s, t, corpus, cfg, checkpoint_dir=ckpt, resume=resume, progress=progress,
                          on_metrics=on_metrics, max_seconds=max_seconds)
        summary = res.summary()
    if rank != 0:
        return None  # rank 0 holds the same weights and writes the result
    if summary.get("out_of_time"):  # no student yet: the checkpoint is the run's state until it finishes
        return unfinished_result(out, ckpt, params_before, s, start, summary)
    s.hf.to("cpu")
    final = final_eval(s, corpus, eval_tokens)
    # recorded exactly as the pipeline records a distill stage (config, report, and the summary under
    # "distill"), plus what only a standalone run knows: the teacher, the data, the schedule
    record = {k: summary[k] for k in ("steps", "tokens", "final_losses") if k in summary}
    record["seconds"] = summary.get("seconds", round(time.perf_counter() - start, 2))
    extra = {"distill": summary, "teacher": {"spec": teacher, "hash": t.hash if t else None}, "data": data,
             "schedule": schedule.model_dump() if schedule else None,
             "prune": prune.model_dump(mode="json") if prune else None}
    cfg.save_output(s, out, StageResult(report=summary, extra=extra, record=record), metrics={"eval": final})
    if ckpt.exists():
        shutil.rmtree(ckpt)  # the run finished; the saved student supersedes its checkpoint
    return {"out": str(out), "finished": True, "params_before": params_before, "params_after": s.num_params(),
            "seconds": round(time.perf_counter() - start, 2), **summary, "eval": final,
            "notes": [n for n in (corpus.held_out_note(),) if n]}


def finetune_job(model: str, data: str, out: str | Path, cfg: DistillConfig, *, resume: bool = False,
                 force: bool = False, progress: Callable | None = None, on_metrics: Callable | None = None,
                 log: Callable[[str], None] | None = None, trust_remote_code: bool = False,
                 max_seconds: float | None = None) -> dict:
    """Fine-tune a classifier (``model`` with a head sized to the data's labels) and save it to ``out``;
    ``max_seconds``: a time budget, as for `distill_job` (past it: the checkpoint, no classifier yet)."""
    from slimlm.data import load_data
    from slimlm.distill.finetune import finetune
    from slimlm.models import save

    check_budget(max_seconds)
    if resume and not force and (done := finished_result(Path(out), model, None, data, cfg, kind="finetune")):
        if log:
            log(f"{out} already holds this run's classifier (it finished before it was stopped); nothing to resume")
        return done
    out = check_out(out, force=force, kind="variant")
    ckpt = checkpoint_dir_for(out, resume)
    corpus = load_data(data)
    if not corpus.labels:
        raise DataError(f"data {data!r} has no labels; finetune needs labelled data (shakespeare-genre, or a "
                        ".jsonl/.csv with a label field).")
    m = load_classifier(model, len(corpus.labels), log, trust_remote_code)
    params_before = m.num_params()
    start = time.perf_counter()
    res = finetune(m, corpus, cfg, checkpoint_dir=ckpt, resume=resume, progress=progress, on_metrics=on_metrics,
                   max_seconds=max_seconds)
    summary = res.summary()
    if res.out_of_time:
        return unfinished_result(out, ckpt, params_before, m, start, summary)
    final = final_eval(m, corpus, 4096)
    stage = {"kind": "finetune", "config": cfg.model_dump(mode="json"), "data": data, "labels": corpus.labels,
             "report": {k: v for k, v in summary.items() if k != "eval_curve"}}
    m.hf.config.id2label = dict(enumerate(corpus.labels))
    m.hf.config.label2id = {v: k for k, v in m.hf.config.id2label.items()}
    save(m, out, stage=stage, metrics={"eval": final})
    if ckpt.exists():
        shutil.rmtree(ckpt)
    return {"out": str(out), "finished": True, "params_before": params_before, "params_after": m.num_params(),
            "seconds": round(time.perf_counter() - start, 2), **summary, "eval": final,
            "notes": [n for n in (corpus.held_out_note(),) if n]}
