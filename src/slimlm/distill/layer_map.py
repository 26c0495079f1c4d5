"""Which teacher layer each student layer should imitate.

A student made by dropping layers keeps the others in order; if the pruning provenance says which teacher
layers were kept (or removed), student layer i maps to its own origin. Otherwise layers are matched
uniformly by depth, last to last: student i <-> teacher round((i+1) * Lt / Ls) - 1, the usual choice for
students built from scratch (DistilBERT, TinyBERT).

Provenance shapes understood, per stage (also under the stage's ``report`` / ``result``):
``{"kept_layers": [...]}``, or the structured pruning report
``{"layers": {"removed": [...]}, "shape_before": {"layers": N}}``. Several pruning stages compose.
"""

from __future__ import annotations

import json
from pathlib import Path

_KEYS = ("kept_layers", "layers_kept", "keep_layers")


def _kept_in_stage(stage: dict) -> list[int] | None:
    for where in (stage, stage.get("report") or {}, stage.get("result") or {}, stage.get("config") or {}):
        for key in _KEYS:
            if isinstance(where.get(key), list):
                return [int(i) for i in where[key]]
        layers = where.get("layers")
        n_before = (where.get("shape_before") or {}).get("layers")
        if isinstance(layers, dict) and isinstance(layers.get("removed"), list) and n_before:
            removed = set(layers["removed"])
            return [i for i in range(int(n_before)) if i not in removed]
    return None


def kept_layers_from_provenance(provenance: dict) -> list[int] | None:
    """Teacher layer index of every student layer, composed over all pruning stages; None if unknown."""
    kept: list[int] | None = None
    for stage in provenance.get("stages") or []:
        found = _kept_in_stage(stage)
        if found is not None:
            kept = found if kept is None else [kept[i] for i in found]
    return kept


def model_provenance(model) -> dict:
    """The model's provenance, plus the layer report `slimlm prune` saves beside it (top-level ``prune`` key of
    ``slimlm.json``) when the stages themselves do not say which layers were kept. That report describes the
    last pruning stage only, so it is used when the model went through exactly one."""
    prov = model.provenance
    if kept_layers_from_provenance(prov) is not None or model.path is None:
        return prov
    meta_file = Path(model.path) / "slimlm.json"
    if not meta_file.is_file():
        return prov
    report = json.loads(meta_file.read_text()).get("prune") or {}
    prunes = [st for st in prov.get("stages") or [] if st.get("kind") == "prune"]
    if len(prunes) != 1 or _kept_in_stage(report) is None:
        return prov
    return {**prov, "stages": [{"kind": "prune", "report": report}]}


def derive_layer_map(student_layers: int, teacher_layers: int, provenance: dict | None = None) -> list[tuple[int, int]]:
    """The (student, teacher) layer pairs for hidden-state transfer."""
    kept = kept_layers_from_provenance(provenance or {})
    if kept is not None and len(kept) == student_layers and max(kept) < teacher_layers:
        return list(enumerate(kept))
    return [(i, round((i + 1) * teacher_layers / student_layers) - 1) for i in range(student_layers)]
