"""Pruning configs: typed, frozen, versioned, one class per method, round-trippable through YAML.

Unstructured methods (`MagnitudeConfig`, `WandaConfig`, `SparseGPTConfig`) zero weights inside the blocks'
Linear layers; `StructuredConfig` removes whole layers, heads, FFN channels, hidden channels or vocabulary
rows and leaves a smaller dense model. The ``method`` literal is the discriminator a recipe uses to rebuild
a config from YAML (`config_from_dict`). Validation errors name the field (`ConfigError`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slimlm.errors import ConfigError

Extra = Literal["lm_head", "embeddings"]


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = 1


class _Unstructured(_Base):
    """Shared fields of the unstructured methods.

    ``sparsity`` is the fraction of weights zeroed in every pruned Linear (the mean over layers with OWL).
    ``pattern`` ``"N:M"`` keeps N of every M consecutive input weights (2:4 implies sparsity 0.5).
    ``allocation`` ``owl`` gives layers with more activation outliers lower sparsity (Yin et al. 2023):
    layer sparsity spans ``sparsity ± owl_lambda``, outliers are scores above ``owl_threshold`` × the mean.
    ``include`` adds ``lm_head`` / ``embeddings`` (pruned by per-row magnitude; excluded by default).
    ``sequential`` feeds each layer the outputs of the already pruned layers before it (slower, better).
    """

    sparsity: float = Field(0.5, ge=0.0, lt=1.0)
    pattern: str | None = None
    allocation: Literal["uniform", "owl"] = "uniform"
    owl_threshold: float = Field(5.0, gt=0)
    owl_lambda: float = Field(0.08, ge=0, lt=0.5)
    include: tuple[Extra, ...] = ()
    sequential: bool = True

    @model_validator(mode="before")
    @classmethod
    def _pattern_sets_sparsity(cls, data):
        if isinstance(data, dict) and data.get("pattern"):
            n, m = parse_pattern(data["pattern"])
            implied = 1 - n / m
            given = data.get("sparsity")
            if given is not None and abs(float(given) - implied) > 1e-6:
                raise ValueError(
                    f"pattern {data['pattern']} means sparsity {implied:g}; drop --sparsity or set it to {implied:g}"
                )
            data = {**data, "sparsity": implied}
        return data

    @model_validator(mode="after")
    def _check(self):
        if self.pattern and self.allocation != "uniform":
            raise ValueError("an N:M pattern fixes every layer's sparsity; use allocation uniform with a pattern")
        if self.allocation == "owl" and self.sparsity - self.owl_lambda < 0:
            raise ValueError(f"owl_lambda {self.owl_lambda} exceeds sparsity {self.sparsity}; lower owl_lambda")
        return self

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_pattern(self.pattern) if self.pattern else None

    @property
    def needs_calibration(self) -> bool:
        return self.allocation == "owl"


class MagnitudeConfig(_Unstructured):
    """Zero the smallest |W| in every output row (no calibration unless ``allocation="owl"``)."""

    method: Literal["magnitude"] = "magnitude"


class WandaConfig(_Unstructured):
    """Zero the smallest |W_ij|·‖X_j‖ in every output row (Sun et al. 2023)."""

    method: Literal["wanda"] = "wanda"

    @property
    def needs_calibration(self) -> bool:
        return True


class SparseGPTConfig(_Unstructured):
    """OBS-style pruning with reconstruction from the inverse Hessian of calibration inputs (Frantar 2023).

    ``blocksize`` columns are masked and updated together (lazy batched updates); ``damp`` is added to the
    Hessian diagonal as a fraction of its mean.
    """

    method: Literal["sparsegpt"] = "sparsegpt"
    blocksize: int = Field(128, ge=1)
    damp: float = Field(0.01, gt=0)

    @property
    def needs_calibration(self) -> bool:
        return True


class StructuredConfig(_Base):
    """Physical removal; every field is optional and the set ones are applied in the order listed here.

    ``layers``: a count (``6``) or a fraction (``0.2``) of blocks to drop, ranked by ``layer_importance``
    (``block_influence`` = 1 − cos(h_in, h_out), ShortGPT; ``perplexity`` = calibration loss with the
    layer removed alone). ``heads``: fraction of query heads to remove, ``head_mode`` ``groups`` (whole KV
    groups), ``query`` (the same number of query heads from every group) or ``auto`` (groups if the ratio
    allows). ``ffn``: fraction of FFN channels (``ffn_importance`` ``activation``: mean |input of down|,
    Minitron; ``taylor``: |a · dL/da|). ``hidden``: fraction of hidden channels (Minitron). ``vocab``:
    ``domain`` keeps the tokens seen in the calibration corpus (plus specials and byte fallbacks).
    """

    method: Literal["structured"] = "structured"
    layers: float | None = Field(None, ge=0)
    layer_importance: Literal["block_influence", "perplexity"] = "block_influence"
    heads: float | None = Field(None, ge=0, lt=1)
    head_mode: Literal["auto", "groups", "query"] = "auto"
    ffn: float | None = Field(None, ge=0, lt=1)
    ffn_importance: Literal["activation", "taylor"] = "activation"
    hidden: float | None = Field(None, ge=0, lt=1)
    vocab: Literal["domain"] | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.layers is not None and self.layers >= 1 and self.layers != int(self.layers):
            raise ValueError(f"layers={self.layers:g}: give a whole count (6) or a fraction below 1 (0.2)")
        if all(getattr(self, k) in (None, 0) for k in ("layers", "heads", "ffn", "hidden", "vocab")):
            raise ValueError("nothing to prune; set at least one of layers, heads, ffn, hidden, vocab")
        return self

    @property
    def needs_calibration(self) -> bool:
        return True


PruneConfig = Annotated[
    MagnitudeConfig | WandaConfig | SparseGPTConfig | StructuredConfig, Field(discriminator="method")
]
UNSTRUCTURED = {"magnitude": MagnitudeConfig, "wanda": WandaConfig, "sparsegpt": SparseGPTConfig}


def parse_pattern(pattern: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``: keep N of every M consecutive weights."""
    try:
        n, m = (int(x) for x in str(pattern).split(":"))
    except ValueError:
        raise ValueError(f"pattern {pattern!r} is not N:M (for example 2:4 or 4:8)") from None
    if not 0 < n < m:
        raise ValueError(f"pattern {pattern!r} needs 0 < N < M (for example 2:4)")
    return n, m


def _config_error(exc: ValidationError, what: str) -> ConfigError:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith(("function-", "tagged-union")))
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return ConfigError(f"invalid {what} config: {'; '.join(parts)}.")


def make_config(method: str, **fields) -> _Base:
    """Build and validate a config; errors become one `ConfigError` naming each bad field."""
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(PruneConfig).validate_python({"method": method, **fields})
    except ValidationError as exc:
        raise _config_error(exc, f"prune {method}") from None


def config_from_dict(data: dict) -> _Base:
    """Rebuild a config from ``model_dump()`` output (a recipe's YAML), dispatching on ``method``."""
    data = dict(data)
    if "method" not in data:
        raise ConfigError("prune config has no 'method'; use magnitude, wanda, sparsegpt or structured.")
    return make_config(data.pop("method"), **data)


def parse_structured(spec: str, **fields) -> StructuredConfig:
    """Parse ``"layers=6,heads=0.25,ffn=0.25,hidden=0.1,vocab=domain"`` into a `StructuredConfig`."""
    out: dict = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--structured item {item!r} is not key=value (for example ffn=0.25).")
        if key not in ("layers", "heads", "ffn", "hidden", "vocab"):
            raise ConfigError(f"--structured key {key!r} is unknown; use layers, heads, ffn, hidden or vocab.")
        out[key] = value
    return make_config("structured", **out, **fields)
