"""Pieces that the training and quantization jobs share (``distill``, ``finetune``, QAT ``quantize``): the
checkpoint directory beside the output, the time budget, and the result of a run the budget stopped or of one
that had already saved its output when it was stopped.

Checkpoints live beside the output (``OUT.checkpoint``), because saving the result replaces ``OUT`` whole;
a finished job removes its checkpoint, since the saved model supersedes it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from slimlm._io import is_foreign
from slimlm.errors import ConfigError


def checkpoint_dir_for(out_dir: str | Path, resume: bool) -> Path:
    """``OUT.checkpoint``; refuses to start over an earlier run's checkpoint unless resuming (a run that
    finishes removes its checkpoint, so starting over would lose the earlier run's progress)."""
    ckpt = _checkpoint_path(Path(out_dir))
    if is_foreign(ckpt, "meta.json"):
        raise ConfigError(f"{ckpt} is where this run keeps its checkpoints, but it holds something slimlm did not "
                          "write; move it away or choose another --out.")
    if ckpt.exists() and not resume:
        raise ConfigError(f"{ckpt} holds a checkpoint of an earlier run; pass --resume to continue it, "
                          "or delete it to start over.")
    return ckpt


def _checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".checkpoint")


def check_budget(max_seconds: float | None) -> None:
    if max_seconds is not None and max_seconds <= 0:
        raise ConfigError(f"--max-minutes must be above 0, got {max_seconds / 60:g}.")


def unfinished_result(out: Path, ckpt: Path, params_before: int, model, start: float, summary: dict) -> dict:
    """The result of a run the time budget stopped: its checkpoint, no model at ``out`` yet."""
    return {"out": str(out), "finished": False, "checkpoint": str(ckpt), "params_before": params_before,
            "params_after": model.num_params(), "seconds": round(time.perf_counter() - start, 2), **summary}


def _same_model(recorded: str | None, given: str | None) -> bool:
    if recorded is None or given is None:
        return recorded == given
    if recorded == given:
        return True
    a, b = Path(recorded).expanduser(), Path(given).expanduser()
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def finished_result(out: Path, student: str, teacher: str | None, data: str | None, cfg, schedule=None,
                    prune=None, kind: str = "distill") -> dict | None:
    """The result of a run that already saved its student at ``out`` (killed after the save, before it exited or
    removed its checkpoint): the same student, teacher, data and settings; else None. The leftover checkpoint
    (slimlm's own) goes, as the run would have removed it. ``kind``: distill, finetune (no teacher) or
    quantize (QAT: ``cfg`` is its `QATConfig`, no teacher)."""
    try:
        meta = json.loads((out / "slimlm.json").read_text())
        stage = meta["stages"][-1]
        parent = meta["parent"]["spec"]
        same = stage["kind"] == kind and stage["config"] == cfg.model_dump(mode="json")
        if kind == "distill":
            same = same and _same_model(parent, student) and \
                _same_model((meta.get("teacher") or {}).get("spec"), teacher) and meta.get("data") == data and \
                meta.get("schedule") == (schedule.model_dump() if schedule else None) and \
                meta.get("prune") == (prune.model_dump(mode="json") if prune else None)
        elif kind == "quantize":
            same = same and stage.get("data") == data and _same_model(parent, student)
        else:  # load_classifier gives a tiny spec its head size as an option
            labelled = f"{student}{'&' if '?' in student else '?'}labels={len(stage['labels'])}"
            same = same and stage.get("data") == data and (_same_model(parent, student) or parent == labelled)
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    if not same:
        return None
    ckpt = _checkpoint_path(out)
    if ckpt.exists() and not is_foreign(ckpt, "meta.json"):
        shutil.rmtree(ckpt)
    summary = meta.get("distill") or stage.get("report") or {}
    return {"out": str(out), "finished": True, "already_finished": True, "params_before": None,
            "params_after": None, **summary, "eval": (meta.get("metrics") or {}).get("eval")}
