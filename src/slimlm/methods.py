"""The method contract: what every compression method's config answers, and the registry of methods.

A method is one module holding its config class (a `MethodConfig` subclass) and its handler (the config's
`apply`). Everything else in slimlm asks the config instead of testing names or types:

- the stage runner: ``needs_calibration``, ``apply`` and ``save_output`` (how the result is saved; restoring
  is `slimlm.models.load`'s job, from what ``save_output`` recorded);
- recipes: ``label()`` for the variant's name, and the registry to parse a stage from YAML;
- search spaces: ``space`` (the keys a trial may set, with their "off" values) and ``from_pick`` (the stage
  a trial's pick asks for);
- the report: ``hardware()`` (what makes this method pay off on which hardware).

Adding a method is one module plus one `register` line in its family package (``slimlm.prune``,
``slimlm.distill``, ``slimlm.quantize``). Registration is explicit: no package scanning.

Trade-off: the registry is module-level state, filled once at import of each family package, and read-only
afterwards; it is the one global of the library, kept because a recipe file names methods by string.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from slimlm.errors import ConfigError

if TYPE_CHECKING:
    from slimlm.calibration import Calibration
    from slimlm.data import Corpus
    from slimlm.models import Model


@dataclass
class StageContext:
    """What a stage may need besides the model and its calibration: data, the teacher, progress, a place
    for checkpoints (a killed stage resumes from there), and ``on_metrics`` for a training stage's step and
    evaluation metrics (a search reports them to its study and may stop the stage by raising)."""

    corpus: Corpus | None = None
    teacher: Model | None = None
    progress: Callable | None = None
    checkpoint_dir: Path | None = None
    on_metrics: Callable[[dict], None] | None = None


@dataclass
class StageResult:
    """What a stage did: ``report`` (shown and returned to the user: ``params_before``, ``params_after``,
    method measurements) and what to record in the saved variant's ``slimlm.json`` (``metrics``,
    ``extra``, and the stage's own ``record``: its report summary)."""

    report: dict
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)


class MethodConfig(BaseModel):
    """Base of every method config: typed, frozen, versioned, extra fields forbidden.

    Class attributes a method sets: ``family`` (``prune`` | ``distill`` | ``quantize``), ``key_field`` (the
    discriminator a recipe uses, ``method`` or ``scheme``; None for a family with one method), ``space``
    and ``added_defaults``: fields added after runs were cached, with their default values; a stage whose
    field holds that default leaves it out of its cache key, so adding an option never invalidates caches.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    family: ClassVar[str] = ""
    key_field: ClassVar[str | None] = None
    space: ClassVar[dict[str, Any]] = {}
    added_defaults: ClassVar[dict[str, Any]] = {}
    version: int = 1

    @classmethod
    def method_name(cls) -> str:
        """The value of the discriminator (``wanda``, ``int8-dynamic``), or the kind itself."""
        if cls.key_field is None:
            return cls.family
        return cls.model_fields[cls.key_field].default

    @property
    def needs_calibration(self) -> bool:
        """Whether `apply` needs calibration data (the stage runner samples it only then)."""
        return False

    def label(self) -> str:
        """A short human name for the stage (``wanda 50%``, ``int8-dynamic sq0.5``)."""
        return self.method_name()

    def hardware(self) -> str:
        """One sentence on where this method's speed or size gain comes from, and on what hardware."""
        return ""

    @classmethod
    def from_pick(cls, pick: dict[str, Any], fixed: dict[str, Any], before: list[dict]) -> dict | None:
        """The stage (``{kind: body, "calibration": ...}``) a search trial's ``pick`` asks of this method,
        or None. ``pick`` holds every space key (missing ones at their off value); ``fixed`` is the space's
        shared settings; ``before`` the stages already chosen for this trial."""
        return None

    @classmethod
    def check_space_value(cls, key: str, value: Any) -> str | None:
        """Why ``value`` is not a valid choice for the space key ``key`` this method declares (None: valid)."""
        return None

    @classmethod
    def check_model_value(cls, key: str, value: Any, model: Model) -> str | None:
        """Why ``model`` cannot take ``value`` of the space key ``key`` (None: it can), e.g. a layer count
        that would remove every layer of a shallow model; a search leaves such values out."""
        return None

    def apply(self, model: Model, calib: Calibration | None, ctx: StageContext) -> StageResult:
        """Run the method on ``model`` in place."""
        raise NotImplementedError(f"{type(self).__name__} has no handler")

    def save_output(self, model: Model, out_dir: str | Path, result: StageResult, metrics: dict | None = None) -> Path:
        """Save the stage's output as a variant directory (plain `slimlm.models.save` by default)."""
        from slimlm.models import save

        stage = {"kind": self.family, "config": self.model_dump(mode="json")}
        if result.record:
            stage["report"] = result.record
        return save(model, out_dir, stage=stage, metrics={**result.metrics, **(metrics or {})},
                    extra=result.extra or None)


REGISTRY: dict[str, dict[str, type[MethodConfig]]] = {}
"""kind -> method name -> config class, in registration order (search spaces ask them in this order)."""


def register(cls: type[MethodConfig]) -> type[MethodConfig]:
    """Register a method config (call it once, next to the family's other registrations)."""
    if not cls.family:
        raise TypeError(f"{cls.__name__} does not set family")
    REGISTRY.setdefault(cls.family, {})[cls.method_name()] = cls
    return cls


def methods(kind: str) -> dict[str, type[MethodConfig]]:
    """The registered methods of one kind (``prune``, ``distill``, ``quantize``)."""
    return dict(REGISTRY.get(kind, {}))


def validation_message(exc: ValidationError) -> str:
    """One line naming each bad field of a pydantic error."""
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith(("function-", "tagged-union")))
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_method(kind: str, data: dict) -> MethodConfig:
    """Build a registered method config from a plain dict (a recipe's YAML), dispatching on its key field.

    Raises:
        ConfigError: an unknown method or a bad field, named in one sentence.
    """
    table = REGISTRY.get(kind) or {}
    if not table:
        raise ConfigError(f"no {kind} methods are registered; import slimlm.{kind} first.")
    data = dict(data)
    first = next(iter(table.values()))
    key = first.key_field
    if key is None:
        cls = first
    else:
        name = data.get(key)
        if name is None:
            raise ConfigError(f"{kind} config has no '{key}'; use one of {', '.join(table)}.")
        cls = table.get(str(name))
        if cls is None:
            raise ConfigError(f"unknown {kind} {key} {name!r}; use one of {', '.join(table)}.")
    try:
        return cls(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid {kind} {cls.method_name()} config: {validation_message(exc)}.") from None
    except TypeError as exc:
        raise ConfigError(f"invalid {kind} config: {exc}.") from None
