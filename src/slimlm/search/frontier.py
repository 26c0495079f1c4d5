"""Pareto frontier, hypervolume and operating-point selection over measured variants (pure functions, no I/O).

Every objective is minimised: ``quality_drop`` (relative to the base model: perplexity / base − 1 for LMs,
1 − accuracy / base for classifiers) and one or more costs (``latency_p50_ms``, ``disk_mb``, ``peak_rss_mb``,
``energy_j_per_1k_tokens``). A point is a flat metrics dict or a variant dict with a ``metrics`` dict; a point
with a missing (``None``/NaN) objective is never on the front, because "unknown" must not look like "free".

Selection: inside the quality tier, the out-of-domain guard and the SLOs, take the best variant on one cost.
When nothing qualifies, `select` still names the closest variant, so a run always ends with something to
ship or to improve on, and says plainly that the bar was not met.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from slimlm.errors import ConfigError
from slimlm.runs import Metrics, Variant, worst_corpus

TIERS: dict[str, float] = {"critical": 0.005, "high": 0.01, "medium": 0.03}
"""Maximum relative quality drop per tier (0.03 = perplexity up by at most 3%)."""

OBJECTIVES: dict[str, str] = {
    "latency": "latency_p50_ms",
    "size": "disk_mb",
    "memory": "peak_rss_mb",
    "energy": "energy_j_per_1k_tokens",
}
"""Selection objective name → the metric it minimises."""

DEFAULT_MAX_OOD_DROP = 0.10
"""Default out-of-domain guard: a variant whose out-of-domain perplexity rises more than 10% is never selected.

Why 10%: the tiers bound the in-domain drop at 0.5-3%, and variants that keep general ability lose a little
more out of domain than in domain (on SmolLM2-135M, int8 variants at or near the medium tier lose 1.6-3.4% on
``pydoc``; GPTQ int4 loses 12-16% out of domain for 8-10% in domain, see ``bench/results/search.md``), so the
guard must sit above the widest tier to leave such variants in. A variant specialised by distillation on
the domain alone loses 120-160% on the same text: anything past 10% means the model got noticeably worse at
text the user did not evaluate on, which a tier on in-domain quality alone would not show."""

HV_DROP_CAP = 0.10
"""Quality drop at the hypervolume reference point: variants losing more than 10% count for nothing."""

_BEST = {"latency": "fastest", "size": "smallest on disk", "memory": "lowest peak memory",
         "energy": "lowest energy per 1k tokens"}


def value(point: Variant | Metrics | Mapping[str, Any] | None, key: str) -> float | None:
    """A number by name from a `Variant`, its `Metrics`, or a flat dict (``point[key]`` or
    ``point["metrics"][key]``), as a float; None when missing, null or NaN."""
    if point is None:
        return None
    if isinstance(point, (Variant, Metrics)):
        return point.value(key) if isinstance(point, Variant) else point.number(key)
    v = point.get(key)
    if v is None and isinstance(point.get("metrics"), Mapping):
        v = point["metrics"].get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        return None
    return float(v)


def value_of(point: Variant | Mapping[str, Any] | None, key: str) -> Any:
    """A measurement by name as stored (strings too): ``point.metrics`` of a `Variant`, else ``point[key]`` or
    ``point["metrics"][key]``; None when absent."""
    if isinstance(point, Variant):
        return point.metrics.get(key)
    if not isinstance(point, Mapping):
        return None
    v = point.get(key)
    if v is None and isinstance(point.get("metrics"), Mapping):
        v = point["metrics"].get(key)
    return v


def field_of(point: Variant | Mapping[str, Any] | None, name: str) -> Any:
    """A variant's own field (``id``, ``label``, ``is_baseline``) from a `Variant` or a variant dict."""
    if point is None:
        return None
    return point.get(name) if isinstance(point, Mapping) else getattr(point, name, None)


def _vector(point: Mapping[str, Any], objectives: Sequence[str]) -> tuple[float, ...] | None:
    vals = tuple(value(point, k) for k in objectives)
    return None if any(v is None for v in vals) else vals  # type: ignore[return-value]


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front(points: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points, all objectives minimised, in input order.

    Points with a missing objective are left out (and dominate nothing). Points with identical objective
    values are all kept: neither dominates the other.

    Args:
        points: flat metric dicts, or variant dicts carrying a ``metrics`` dict.
        objectives: metric names, e.g. ``["quality_drop", "latency_p50_ms"]``.

    Returns:
        Indices into ``points``.

    Example:
        >>> pareto_front([{"a": 1, "b": 3}, {"a": 2, "b": 2}, {"a": 3, "b": 3}], ["a", "b"])
        [0, 1]
    """
    vecs = [_vector(p, objectives) for p in points]
    known = [(i, v) for i, v in enumerate(vecs) if v is not None]
    return [i for i, v in known if not any(_dominates(w, v) for j, w in known if j != i)]


def _hv(vecs: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Exact dominated volume by slicing along the last objective.

    Each slice is the (d−1)-dimensional volume of the points below it, so the cost is O(n^(d−1)) for n
    non-dominated points: instant for two or three objectives, ~0.1 s for five objectives and 30 points.
    """
    vecs = [v for v in vecs if all(x < r for x, r in zip(v, ref, strict=True))]
    vecs = [v for v in dict.fromkeys(vecs) if not any(_dominates(w, v) for w in vecs)]  # dominated add nothing
    if not vecs:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(v[0] for v in vecs)
    vecs.sort(key=lambda v: v[-1])
    total = 0.0
    for i, v in enumerate(vecs):
        upper = vecs[i + 1][-1] if i + 1 < len(vecs) else ref[-1]
        if upper > v[-1]:
            total += _hv([w[:-1] for w in vecs[: i + 1]], ref[:-1]) * (upper - v[-1])
    return total


def hypervolume(points: Sequence[Mapping[str, Any]], objectives: Sequence[str],
                reference: Mapping[str, float] | Sequence[float]) -> float:
    """Volume of objective space dominated by the points and bounded by ``reference`` (exact, any dimension).

    Points with a missing objective, or not strictly better than the reference in every objective, add
    nothing. For a unit-free number use `normalised_hypervolume`.

    Args:
        points: flat metric dicts or variant dicts.
        objectives: metric names, all minimised.
        reference: the worst acceptable value of each objective (dict by name, or a sequence in order).

    Returns:
        The volume, in the product of the objectives' units.

    Example:
        >>> hypervolume([{"a": 1, "b": 3}, {"a": 2, "b": 2}], ["a", "b"], [4, 4])
        5.0
    """
    ref = tuple(float(reference[k]) for k in objectives) if isinstance(reference, Mapping) else tuple(map(float, reference))
    if len(ref) != len(objectives):
        raise ValueError(f"reference has {len(ref)} values for {len(objectives)} objectives")
    vecs = [v for v in (_vector(p, objectives) for p in points) if v is not None]
    return _hv(vecs, ref)


def normalised_hypervolume(variants: Sequence[Mapping[str, Any]], objectives: Sequence[str], *,
                           drop_cap: float = HV_DROP_CAP) -> float | None:
    """Hypervolume as a share of the unit box between the ideal model and the baseline, in [0, 1].

    Each cost is divided by the baseline's (so the baseline sits at 1.0) and ``quality_drop`` by
    ``drop_cap`` (so a 10% drop sits at 1.0 by default). The reference point is 1.0 in every objective: a
    variant no cheaper than the baseline, or losing ``drop_cap`` or more, adds nothing. Values below 0 (a
    variant better than the baseline) are clipped to 0, the ideal. 1.0 would be a free, lossless model.

    Args:
        variants: variant dicts; the one with ``is_baseline: true`` sets the scale.
        objectives: metric names, all minimised; ``quality_drop`` is scaled by ``drop_cap``.
        drop_cap: quality drop at the reference point.

    Returns:
        The share, or None without a baseline that has every cost measured.
    """
    base = next((v for v in variants if field_of(v, "is_baseline")), None)
    if base is None:
        return None
    scale = {}
    for k in objectives:
        s = drop_cap if k == "quality_drop" else value(base, k)
        if not s or s <= 0:
            return None
        scale[k] = s
    pts = []
    for v in variants:
        vec = _vector(v, objectives)
        if vec is not None:
            pts.append({k: max(0.0, x / scale[k]) for k, x in zip(objectives, vec, strict=True)})
    return hypervolume(pts, objectives, [1.0] * len(objectives))


def parse_drop(text: str | float, option: str = "--max-drop", *, recorded: bool = False) -> float:
    """Parse a quality bar: ``"1%"`` → 0.01, ``"0.01"`` → 0.01, or a tier name (``"medium"`` → 0.03).

    ``recorded``: ``text`` is a fraction slimlm parsed and saved earlier (run.json's selection), so 2.0 is the
    ``200%`` a user wrote, not an ambiguous bare number.

    Raises:
        ConfigError: for anything else, including a bare number ≥ 1 (``3`` could mean 3% or 300%).
    """
    if isinstance(text, (int, float)):
        raw, pct = float(text), False
        if recorded:
            raw, pct = raw * 100, True
    else:
        s = str(text).strip().lower()
        if s in TIERS and option == "--max-drop":
            return TIERS[s]
        pct = s.endswith("%")
        try:
            raw = float(s.rstrip("%").strip())
        except ValueError:
            hint = f", or a tier ({', '.join(TIERS)})" if option == "--max-drop" else ", or none to turn it off"
            raise ConfigError(f"{option} {text!r} is not a number; write 10% or 0.1{hint}.") from None
    drop = raw / 100 if pct else raw
    if math.isnan(drop) or drop < 0:
        raise ConfigError(f"{option} {text!r} must be zero or positive; write 1% or 0.01.")
    if not pct and drop >= 1:
        raise ConfigError(f"{option} {text!r} is ambiguous; write {raw:g}% for a percentage or a fraction "
                          "below 1 such as 0.03.")
    return drop


def parse_ood_drop(text: str | float | None) -> float | None:
    """Parse the out-of-domain guard: ``"10%"`` or ``0.1`` → 0.1; ``"none"`` (or ``"off"``) → None (no
    guard); None (not given) → `DEFAULT_MAX_OOD_DROP`.

    Raises:
        ConfigError: for anything else, in one sentence naming ``--max-ood-drop``.
    """
    if text is None:
        return DEFAULT_MAX_OOD_DROP
    if isinstance(text, str) and text.strip().lower() in ("none", "off"):
        return None
    return parse_drop(text, option="--max-ood-drop")


def ood_guard_option(guard: float | None) -> str:
    """A parsed guard written back as `parse_ood_drop` reads it unambiguously (``"none"``, ``"200%"``): a
    fraction of 1 or more would read as ambiguous if passed on as a number."""
    return "none" if guard is None else f"{guard * 100:.12g}%"


def saved_ood_guard(saved: Mapping[str, Any]) -> float | None:
    """The guard recorded in a run's ``selection`` (``max_ood_drop``: a fraction, or null when it was turned
    off); `DEFAULT_MAX_OOD_DROP` for runs recorded before the guard existed."""
    if "max_ood_drop" not in saved:
        return DEFAULT_MAX_OOD_DROP
    v = saved["max_ood_drop"]
    return None if v is None else parse_ood_drop(v)


@dataclass(frozen=True)
class Selection:
    """The operating point and why.

    Attributes:
        chosen: the selected variant, or None when nothing meets the bar.
        met: whether ``chosen`` meets the quality tier, the out-of-domain guard and every SLO.
        rule: the rule in one sentence, e.g. "fastest variant with perplexity drop ≤ 3% and out-of-domain
            perplexity drop ≤ 10%".
        closest: when nothing meets the bar, the variant nearest to it (else None).
        reason: one or two sentences on the outcome (naming a variant the guard kept out, if any).
        objective: ``latency`` | ``size`` | ``memory`` | ``energy``.
        max_drop: the quality bar (relative drop).
        max_ood_drop: the out-of-domain guard asked for (None: turned off).
        guard: one sentence on the guard: applied with its bound, off, or not applicable (no out-of-domain
            measure in the run).
        excluded: the variant that would have been chosen without the guard, when the guard kept it out.
    """

    chosen: Variant | None
    met: bool
    rule: str
    closest: Variant | None
    reason: str
    objective: str
    max_drop: float
    max_ood_drop: float | None = None
    guard: str = ""
    excluded: Variant | None = None

    def to_dict(self) -> dict:
        """JSON-ready summary with variant ids instead of whole variants."""
        return {"selected": field_of(self.chosen, "id"), "met": self.met, "rule": self.rule,
                "closest": field_of(self.closest, "id"), "reason": self.reason,
                "objective": self.objective, "max_drop": self.max_drop, "max_ood_drop": self.max_ood_drop,
                "guard": self.guard, "excluded_by_guard": field_of(self.excluded, "id")}


def drop_name(variants: Sequence[Mapping[str, Any]]) -> str:
    """``perplexity drop`` for language models, ``accuracy drop`` for classifiers."""
    if any(value(v, "perplexity") is not None for v in variants):
        return "perplexity drop"
    if any(value(v, "accuracy") is not None for v in variants):
        return "accuracy drop"
    return "quality drop"


def _pct(x: float) -> str:
    return f"{x * 100:.3g}%"


def _ood_measured(variants: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the run measured out-of-domain quality: on the baseline, or (no baseline) on any variant."""
    base = [v for v in variants if field_of(v, "is_baseline")]
    keys = ("ood_quality_drop", "ood_perplexity")
    return any(value(v, k) is not None for v in (base or variants) for k in keys)


def not_runnable(v) -> str | None:
    """Why the run's deployment runtime could not take variant ``v`` (``runtime_not_measured``), else None."""
    why = value_of(v, "runtime_not_measured")
    return str(why) if why else None


def _ood_corpora(variants: Sequence[Mapping[str, Any]]) -> list[str]:
    """The out-of-domain corpora the run measured (the baseline's ``ood`` keys; empty for older runs)."""
    base = [v for v in variants if field_of(v, "is_baseline")]
    for v in base or variants:
        per = value_of(v, "ood")
        if isinstance(per, Mapping) and per:
            return [str(c) for c in per]
    return []


def _ood_drop(v) -> float | None:
    d = value(v, "ood_quality_drop")
    if d is None and field_of(v, "is_baseline") and value(v, "ood_perplexity") is not None:
        return 0.0  # the baseline is the reference
    return d


def select(variants: Sequence[Mapping[str, Any]], *, max_drop: float, objective: str = "latency",
           max_latency_ms: float | None = None, max_memory_mb: float | None = None,
           max_ood_drop: float | None = DEFAULT_MAX_OOD_DROP) -> Selection:
    """The best variant on ``objective`` among those within ``max_drop``, the out-of-domain guard and the SLOs.

    The baseline is a candidate too: when no compressed variant beats it under the rule, keeping it is the
    right answer. A variant with an unknown quality drop never qualifies; one with an unknown SLO metric
    fails that SLO. Ties on the objective go to the smaller quality drop.

    The out-of-domain guard: when the run measured out-of-domain quality (``ood_perplexity`` on the
    baseline), a variant whose ``ood_quality_drop`` exceeds ``max_ood_drop`` is never selected, and one
    whose out-of-domain drop is unknown fails the guard. When the guard keeps out the variant that would
    otherwise have won, the `Selection` names it (``excluded``) and the reason says why.

    A variant the run's deployment runtime could not take (``runtime_not_measured``, see
    `slimlm.recipes.pipeline`) is never a candidate, whatever the objective: it cannot be deployed there.

    Args:
        variants: variant dicts (``id``, ``label``, ``is_baseline``, ``metrics``).
        max_drop: largest allowed relative quality drop (see `TIERS`, `parse_drop`).
        objective: ``latency`` (p50 at the primary shape), ``size`` (disk MB), ``memory`` (peak RSS MB) or
            ``energy`` (J per 1k tokens).
        max_latency_ms: optional p50 latency SLO.
        max_memory_mb: optional peak-memory SLO.
        max_ood_drop: largest allowed out-of-domain quality drop (default `DEFAULT_MAX_OOD_DROP`; None: no
            guard).

    Returns:
        A `Selection`.

    Example:
        >>> sel = select(variants, max_drop=TIERS["medium"], objective="latency", max_latency_ms=200)
        >>> sel.chosen["id"] if sel.met else sel.closest["id"]
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective {objective!r} is unknown; use one of {', '.join(OBJECTIVES)}.")
    metric = OBJECTIVES[objective]
    unrunnable = [v for v in variants if not_runnable(v)]
    runtime_note = ""
    if unrunnable:
        rt = {str(value_of(v, "runtime")) for v in unrunnable} - {"None"}
        runtime_note = (f" {len(unrunnable)} variant(s) could not run on {', '.join(sorted(rt)) or 'the runtime'} "
                        "and are not candidates.")
        variants = [v for v in variants if not not_runnable(v)]
    dname = drop_name(variants)
    guarded = max_ood_drop is not None and _ood_measured(variants)
    conds = [f"{dname} ≤ {_pct(max_drop)}"]
    corpora = _ood_corpora(variants)
    on_each = f" on each of {', '.join(corpora)}" if len(corpora) > 1 else ""
    if guarded:
        conds.append(f"out-of-domain {dname} ≤ {_pct(max_ood_drop)}{on_each}")
        guard = (f"Out-of-domain guard: out-of-domain {dname} ≤ {_pct(max_ood_drop)}{on_each}; a variant past it "
                 "is never selected.")
    elif max_ood_drop is None:
        guard = "Out-of-domain guard off (--max-ood-drop none)."
    else:
        guard = (f"Out-of-domain guard ({_pct(max_ood_drop)}) not applied: the run measured no out-of-domain "
                 "quality (give --ood-data).")
    if max_latency_ms is not None:
        conds.append(f"p50 latency ≤ {max_latency_ms:g} ms")
    if max_memory_mb is not None:
        conds.append(f"peak memory ≤ {max_memory_mb:g} MB")
    rule = f"{_BEST[objective]} variant with {' and '.join(conds)}"

    def meets_slos(v) -> bool:
        lat, mem = value(v, "latency_p50_ms"), value(v, "peak_rss_mb")
        return ((max_latency_ms is None or (lat is not None and lat <= max_latency_ms))
                and (max_memory_mb is None or (mem is not None and mem <= max_memory_mb)))

    def passes_guard(v) -> bool:
        od = _ood_drop(v)
        return not guarded or (od is not None and od <= max_ood_drop + 1e-12)

    rated = [v for v in variants if value(v, "quality_drop") is not None]
    unguarded = [v for v in rated if value(v, "quality_drop") <= max_drop + 1e-12 and meets_slos(v)]
    ok = [v for v in unguarded if passes_guard(v)]

    def key(v):
        cost = value(v, metric)
        return (cost is None, cost if cost is not None else 0.0, value(v, "quality_drop"), str(field_of(v, "id")))

    def name(v) -> str:
        return str(field_of(v, "label") or field_of(v, "id"))

    excluded, note = None, ""
    if unguarded:
        winner = min(unguarded, key=key)
        if not passes_guard(winner):
            od = _ood_drop(winner)
            excluded = winner
            vid = field_of(winner, "id")
            who = name(winner) + (f" ({vid})" if name(winner) != str(vid) else "")
            worst = worst_corpus(value_of(winner, "ood")) if on_each else None
            note = (f" The out-of-domain guard kept out {who}, which would otherwise have won: its "
                    + (f"out-of-domain {dname} is {od * 100:+.3g}%" + (f" on {worst}" if worst else "")
                       if od is not None else "out-of-domain quality was not measured")
                    + f" (guard ≤ {_pct(max_ood_drop)}).")

    if ok:
        best = min(ok, key=key)
        if field_of(best, "is_baseline"):
            reason = (f"No compressed variant beats the baseline under this rule; keep the baseline "
                      f"({len(ok)} of {len(variants)} variants qualify).")
        else:
            reason = f"{name(best)} is the {_BEST[objective]} of the {len(ok)} of {len(variants)} variants that qualify."
        if value(best, metric) is None:
            reason += f" Its {metric} was not measured, so it was chosen on quality alone."
        return Selection(best, True, rule, None, reason + note + runtime_note, objective, max_drop, max_ood_drop,
                         guard, excluded)

    slo_ok = [v for v in rated if meets_slos(v)]
    both_ok = [v for v in slo_ok if passes_guard(v)]
    pool = both_ok or slo_ok or rated
    closest = min(pool, key=lambda v: (value(v, "quality_drop"), key(v))) if pool else None
    if closest is None:
        reason = "No variant has a measured quality drop, so none can be selected; check the run's evaluation."
    else:
        d = value(closest, "quality_drop")
        if both_ok:
            where = "among those meeting the SLOs and the out-of-domain guard" if guarded else "among those meeting the SLOs"
        elif slo_ok:
            where = "among those meeting the SLOs; none of them passes the out-of-domain guard"
        else:
            where = "and no variant meets the SLOs"
        reason = (f"No variant meets the bar. Closest: {name(closest)} with a "
                  f"{_pct(d)} drop ({where}); relax the tier, the SLOs, or add recovery (distillation).")
    return Selection(None, False, rule, closest, reason + note + runtime_note, objective, max_drop, max_ood_drop,
                     guard, excluded)
