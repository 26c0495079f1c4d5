"""Which teacher layer each student layer should imitate.

A student made by dropping layers keeps the others in order; if the pruning provenance lists the kept
teacher layers, student layer i maps to kept[i] (its own origin). Otherwise layers are matched uniformly by
depth, last to last: student i <-> teacher round((i+1) * Lt / Ls) - 1, the usual choice for students built
from scratch (DistilBERT, TinyBERT).
"""

from __future__ import annotations

_KEYS = ("kept_layers", "layers_kept", "keep_layers")


def kept_layers_from_provenance(provenance: dict) -> list[int] | None:
    """Compose the kept-layer lists of all pruning stages (a second prune indexes the first's survivors)."""
    kept: list[int] | None = None
    for stage in provenance.get("stages") or []:
        found = None
        for where in (stage, stage.get("result") or {}, stage.get("config") or {}):
            for key in _KEYS:
                if isinstance(where.get(key), list):
                    found = [int(i) for i in where[key]]
                    break
            if found is not None:
                break
        if found is not None:
            kept = found if kept is None else [kept[i] for i in found]
    return kept


def derive_layer_map(student_layers: int, teacher_layers: int, provenance: dict | None = None) -> list[tuple[int, int]]:
    """The (student, teacher) layer pairs for hidden-state transfer."""
    kept = kept_layers_from_provenance(provenance or {})
    if kept is not None and len(kept) == student_layers and max(kept) < teacher_layers:
        return list(enumerate(kept))
    return [(i, round((i + 1) * teacher_layers / student_layers) - 1) for i in range(student_layers)]
