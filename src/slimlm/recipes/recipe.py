"""Recipes: an ordered list of stages (prune, distill, quantize), each with its method's typed config.

A recipe is YAML that round-trips through the typed configs of each method package:

    name: quick
    description: one-shot structured prune, short distillation, int8
    stages:
      - prune: {method: structured, layers: 6, ffn: 0.25}
        calibration: {samples: 32, seq_len: 256}
      - distill: {steps: 40, loss: kl}
      - quantize: {scheme: int8-dynamic}

Validation happens here, before any model is loaded: a typo fails with the path of the bad field
(``stages[2].quantize: ...``). Stages parse through the method registry (`slimlm.methods`), so a new method
needs no change here, and a stage's label is its config's ``label()``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import slimlm.distill  # noqa: F401  (each family registers its methods on import)
import slimlm.prune  # noqa: F401
import slimlm.quantize  # noqa: F401
from slimlm.errors import ConfigError
from slimlm.methods import REGISTRY, MethodConfig, parse_method

RECIPE_VERSION = 1
KINDS = ("prune", "distill", "quantize")
TOP_LEVEL = ("name", "description", "version", "stages")  # every key `Recipe.to_dict` writes, and only those


def _parse(kind: str, d: dict) -> MethodConfig:
    if kind == "prune":
        from slimlm.prune import config_from_dict

        return config_from_dict(d)
    if kind == "quantize":
        from slimlm.quantize import parse_config

        return parse_config(d)
    return parse_method(kind, d)


class CalibrationSpec(BaseModel):
    """Calibration data for a stage that needs it (pruning, SmoothQuant, GPTQ, the fallback, QAT).

    ``general_data`` (a data spec such as ``pydoc``) with ``general_share`` > 0 draws that share of the
    windows from the general corpus's calibration split: importance and statistics measured on mixed text
    keep what general text needs instead of fitting the cut to the domain alone.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    samples: int = Field(64, ge=1)
    seq_len: int = Field(512, ge=2)
    seed: int = 0
    general_data: str | None = None
    general_share: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _check_general(self) -> CalibrationSpec:
        if self.general_share and not self.general_data:
            raise ValueError("general_share needs general_data (a data spec such as pydoc)")
        return self


@dataclass(frozen=True)
class Stage:
    kind: str
    config: MethodConfig
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)

    def config_dict(self) -> dict:
        return self.config.model_dump(mode="json")

    def to_dict(self) -> dict:
        body = self.config.model_dump(mode="json", exclude_defaults=True)
        for key in ("method", "scheme"):  # discriminators must survive exclude_defaults
            if hasattr(self.config, key):
                body[key] = getattr(self.config, key)
        body.pop("kind", None)
        out: dict[str, Any] = {self.kind: body}
        if self.calibration != CalibrationSpec():
            out["calibration"] = self.calibration.model_dump(exclude_defaults=True)
        return out

    def key(self) -> str:
        """Stable digest of everything that determines this stage's output given its input."""
        calib = self.calibration.model_dump()
        if not calib["general_share"]:  # unmixed calibration keeps the keys runs made before mixing existed
            del calib["general_data"], calib["general_share"]
        config = self.config_dict()
        for name, default in type(self.config).added_defaults.items():
            if config.get(name) == default:  # an option added later, at its default: the key runs had before
                del config[name]
        for name in list(config):  # the same for nested settings (e.g. a quantize stage's fallback)
            sub = getattr(self.config, name, None)
            for k, default in getattr(type(sub), "added_defaults", {}).items():
                if isinstance(config[name], dict) and config[name].get(k) == default:
                    del config[name][k]
        blob = json.dumps({"kind": self.kind, "config": config, "calibration": calib}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def label(self) -> str:
        return self.config.label()


@dataclass(frozen=True)
class Recipe:
    name: str
    stages: tuple[Stage, ...]
    description: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "version": RECIPE_VERSION,
                "stages": [s.to_dict() for s in self.stages]}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)


def recipe_from_dict(data: Any, source: str = "recipe") -> Recipe:
    """Validate a parsed recipe; every error names the path of the bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a recipe is a mapping with 'name' and 'stages'.")
    unknown = set(data) - set(TOP_LEVEL)
    if unknown:
        raise ConfigError(f"{source}: unknown top-level field(s) {sorted(unknown)}; use {', '.join(TOP_LEVEL)}.")
    if data.get("version", RECIPE_VERSION) != RECIPE_VERSION:
        raise ConfigError(f"{source}: version {data['version']} is not supported (this slimlm reads {RECIPE_VERSION}).")
    stages_raw = data.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError(f"{source}: 'stages' must be a non-empty list of prune / distill / quantize stages.")
    stages = []
    for i, raw in enumerate(stages_raw):
        where = f"{source}: stages[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a mapping such as {{prune: {{method: wanda, sparsity: 0.5}}}}.")
        kinds = [k for k in raw if k in KINDS]
        extra = set(raw) - set(KINDS) - {"calibration"}
        if len(kinds) != 1 or extra:
            raise ConfigError(f"{where} must have exactly one of {', '.join(KINDS)} (and optionally calibration); "
                              f"got {sorted(raw)}.")
        kind = kinds[0]
        body = raw[kind] or {}
        if not isinstance(body, dict):
            raise ConfigError(f"{where}.{kind} must be a mapping of config fields.")
        try:
            config = _parse(kind, dict(body))
        except ConfigError as exc:
            raise ConfigError(f"{where}.{kind}: {exc}") from None
        try:
            calib = CalibrationSpec(**(raw.get("calibration") or {}))
        except ValidationError as exc:
            e = exc.errors()[0]
            raise ConfigError(f"{where}.calibration.{'.'.join(map(str, e['loc']))}: {e['msg']}.") from None
        stages.append(Stage(kind, config, calib))
    name = str(data.get("name") or source)
    return Recipe(name=name, stages=tuple(stages), description=str(data.get("description") or ""))


def builtin_names() -> list[str]:
    root = resources.files("slimlm.recipes") / "builtin"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A builtin recipe by name (``quick``) or a YAML file."""
    text = None
    source = str(name_or_path)
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if path.is_dir():
            raise ConfigError(f"{path} is a directory, not a recipe file; give a YAML recipe file "
                              "(see `slimlm recipes show quick`) or a builtin name.")
        if not path.exists():
            raise ConfigError(f"recipe file {path} does not exist.")
        if not path.is_file():
            raise ConfigError(f"{path} is not a regular file; give a YAML recipe file "
                              "(see `slimlm recipes show quick`).")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"recipe file {path} is not UTF-8 text; give a YAML recipe "
                              "(see `slimlm recipes show quick`).") from None
        except OSError as exc:
            raise ConfigError(f"recipe file {path} cannot be read ({exc.strerror}).") from None
    elif source in builtin_names():
        text = (resources.files("slimlm.recipes") / "builtin" / f"{source}.yaml").read_text(encoding="utf-8")
    else:
        raise ConfigError(f"unknown recipe {source!r}; builtin recipes: {', '.join(builtin_names())}, or give a YAML file.")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}: not valid YAML{at}.") from None
    return recipe_from_dict(data, source=path.name if path.exists() else source)


def config_from_stage(stage: dict) -> MethodConfig | None:
    """The typed config of a recorded stage (``{"kind", "config"}`` in a variant's lineage); None when it
    cannot be rebuilt (a stage written by another slimlm version)."""
    kind, cfg = stage.get("kind"), stage.get("config")
    if kind not in REGISTRY or not isinstance(cfg, dict):
        return None
    try:
        return _parse(kind, cfg)
    except ConfigError:
        return None
