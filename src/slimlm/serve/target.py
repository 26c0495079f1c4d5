"""What to serve: a run directory's decision (latest, or number N) or a single saved variant directory.

A `Target` carries everything the server publishes about its operating point (variant, tier bound, recorded
quality drop, SLOs, cost forecast), the teacher to compare against (the run's baseline) and the frontier the
dashboard draws. Loading weights is separate (`load_engine`), so a switch can resolve and validate a
decision before it pays for loading.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from slimlm.errors import SlimlmError
from slimlm.report.decisions import DecisionError, current_decision
from slimlm.search.frontier import value


class ServeError(SlimlmError):
    """Something the server was asked to serve that it cannot."""


def _is_spec(path: str | None) -> bool:
    return bool(path) and bool(re.match(r"^[a-z][a-z0-9+.-]*:", str(path)))


@dataclass
class Target:
    """One operating point to serve.

    Attributes:
        model_path: the variant directory (or a ``tiny:``/``builtin:`` spec for a baseline).
        variant_id: the variant's id.
        run_dir: the run directory, or None for a bare variant directory.
        decision: the decision record (`slimlm.report.decisions`), or None for a bare variant.
        teacher: model spec or directory of the teacher (the run's baseline), or None.
        variants: every variant of the run (id, label, metrics) for the dashboard.
    """

    model_path: str
    variant_id: str
    run_dir: Path | None = None
    decision: dict | None = None
    teacher: str | None = None
    variants: list[dict] = field(default_factory=list)

    @property
    def number(self) -> int | None:
        return (self.decision or {}).get("number")

    @property
    def recorded(self) -> dict:
        return ((self.decision or {}).get("variant") or {}).get("metrics") or {}

    @property
    def baseline_metrics(self) -> dict:
        return ((self.decision or {}).get("baseline") or {}).get("metrics") or {}

    @property
    def max_drop(self) -> float | None:
        return (self.decision or {}).get("max_drop")

    def info(self) -> dict[str, str]:
        d = self.decision or {}
        return {"run": str(self.run_dir.name if self.run_dir else ""), "variant": self.variant_id,
                "tier": str(d.get("tier") or (f"max_drop={d['max_drop']:g}" if d.get("max_drop") is not None else "")),
                "recipe": str((d.get("variant") or {}).get("recipe") or ""), "decision": "" if self.number is None else str(self.number),
                "model": str(d.get("model") or self.model_path)}


def resolve(path: str | Path, decision: int | None = None) -> Target:
    """A run directory (its decision ``decision``, else the latest) or a saved variant directory.

    Raises:
        ServeError: the path is neither, or the decision recommends nothing.
        DecisionError: decision ``decision`` is not recorded.
    """
    p = Path(path)
    if (p / "variants.jsonl").is_file():
        rec = current_decision(p, decision)
        v = rec.get("variant")
        if not v or not v.get("path"):
            raise ServeError(f"decision {rec.get('number') or '(from run.json)'} of {p} has no servable variant "
                             f"({rec.get('reason')}); record one with `slimlm decide {p} --tier ...` or "
                             "`--variant ID`.")
        base = rec.get("baseline") or {}
        from slimlm.report.run import load_run  # latencies restated on the baseline's latest timing

        variants = [{"id": x.id, "label": x.label, "is_baseline": x.is_baseline,
                     "quality_drop": value(x, "quality_drop"), "latency_p50_ms": value(x, "latency_p50_ms")}
                    for x in load_run(p).variants]
        path = str(v["path"])
        moved = v.get("run_path") and not _is_spec(v["run_path"]) and not Path(v["run_path"]).is_absolute()
        if moved and (p / v["run_path"]).exists():  # the run directory may have moved since the decision
            path = str(p / v["run_path"])
        return Target(model_path=path, variant_id=str(v["id"]), run_dir=p, decision=rec,
                      teacher=base.get("path"), variants=variants)
    if decision is not None:
        raise DecisionError(f"--decision needs a run directory; {p} has no variants.jsonl.")
    if (p / "config.json").is_file():
        meta = {}
        if (p / "slimlm.json").is_file():
            try:
                meta = json.loads((p / "slimlm.json").read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                meta = {}
        vid = str(meta.get("hash") or p.name)[:16]
        return Target(model_path=str(p), variant_id=vid)
    raise ServeError(f"{p} is neither a run directory (with variants.jsonl) nor a saved model directory (with "
                     "config.json); pass the directory `slimlm compress` wrote or a variant under its cache/.")


def load_engine(target: Target, *, trust_remote_code: bool = False):
    """Load the target's weights into an `Engine` (named by the variant id)."""
    from slimlm.models import load
    from slimlm.serve.engine import Engine

    return Engine(load(target.model_path, trust_remote_code=trust_remote_code), target.variant_id)


def load_teacher(target: Target, spec: str | None = None):
    """The teacher `Engine` (``spec`` overrides the run's baseline), or None when there is none to load."""
    from slimlm.models import load
    from slimlm.serve.engine import Engine

    spec = spec or target.teacher
    if not spec:
        return None
    if not _is_spec(spec) and not Path(spec).exists():
        raise ServeError(f"teacher {spec} does not exist; pass --teacher SPEC or --no-shadow --no-canary.")
    return Engine(load(spec), f"teacher:{spec}")


__all__ = ["DecisionError", "ServeError", "Target", "load_engine", "load_teacher", "resolve"]
