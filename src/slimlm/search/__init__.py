"""Search: the Pareto frontier over measured variants and the choice of an operating point."""

from slimlm.search.frontier import (
    HV_DROP_CAP,
    OBJECTIVES,
    TIERS,
    Selection,
    hypervolume,
    normalised_hypervolume,
    pareto_front,
    parse_drop,
    select,
)

__all__ = [
    "HV_DROP_CAP", "OBJECTIVES", "TIERS", "Selection", "hypervolume", "normalised_hypervolume", "pareto_front",
    "parse_drop", "select",
]
