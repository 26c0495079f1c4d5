"""Search: the Pareto frontier over measured variants and the choice of an operating point."""

from slimlm.search.frontier import (
    DEFAULT_MAX_OOD_DROP,
    HV_DROP_CAP,
    OBJECTIVES,
    TIERS,
    Selection,
    hypervolume,
    normalised_hypervolume,
    pareto_front,
    parse_drop,
    parse_ood_drop,
    select,
)
from slimlm.search.space import Space, load_space, space_from_dict
from slimlm.search.study import parse_duration, search

__all__ = [
    "DEFAULT_MAX_OOD_DROP", "HV_DROP_CAP", "OBJECTIVES", "TIERS", "Selection", "hypervolume", "normalised_hypervolume", "pareto_front",
    "parse_drop", "parse_ood_drop", "parse_duration", "search", "select", "Space", "load_space", "space_from_dict",
]

from slimlm._verbs import make_callable  # noqa: E402

make_callable(__name__, "slimlm.workflows:search")  # `slimlm.search(...)` calls the public verb
