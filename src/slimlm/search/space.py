"""Search spaces: categorical choices over recipe parameters, and the builder that turns a pick into a recipe.

A space file:

    name: builtin
    choices:                      # each trial picks one value per key
      layers: [0, 2, 4, 6]        # structured: whole layers removed (count or fraction)
      ffn: [0.0, 0.25]            # structured: share of FFN channels removed
      heads: [0.0]                # structured: share of attention heads removed
      unstructured: [none, wanda:0.5, sparsegpt:2:4]   # method:sparsity or method:N:M
      distill_steps: [0, 20]      # distillation after pruning (skipped when nothing was pruned)
      distill_loss: [kl]
      quantize: [none, int8-dynamic, int8-weight, int4-weight]
      quantize_skip: ["lm_head,embed", embed, none]   # parts kept in fp32 (default both; none: quantize all)
      group_size: [32, 64]        # int4 only
    fixed:                        # settings every trial shares
      calibration: {samples: 32, seq_len: 256}
      distill: {lr: 3.0e-4, batch_size: 4, seq_len: 256}

Every choice is categorical: recipe parameters are few and discrete, and categorical picks make trials that
share a prefix (same pruning) hit the stage cache. Omitted keys take "off" values.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from slimlm.errors import ConfigError
from slimlm.recipes import Recipe, recipe_from_dict

KEYS = ("layers", "ffn", "heads", "unstructured", "distill_steps", "distill_loss", "quantize", "quantize_skip",
        "group_size")
OFF = {"layers": 0, "ffn": 0.0, "heads": 0.0, "unstructured": "none", "distill_steps": 0, "distill_loss": "kl",
       "quantize": "none", "quantize_skip": "lm_head,embed", "group_size": 32}


@dataclass(frozen=True)
class Space:
    name: str
    choices: dict[str, list]
    fixed: dict[str, Any]
    description: str = ""

    def build(self, params: dict[str, Any]) -> Recipe | None:
        """The recipe for one pick of parameters (None when the pick changes nothing: the baseline)."""
        p = {**OFF, **params}
        cal = self.fixed.get("calibration", {})
        stages: list[dict] = []
        structured = {k: p[k] for k in ("layers", "ffn", "heads") if p[k]}
        if structured:
            stages.append({"prune": {"method": "structured", **structured}, "calibration": cal})
        elif p["unstructured"] != "none":
            method, _, amount = str(p["unstructured"]).partition(":")
            cfg = {"method": method, **({"pattern": amount} if ":" in amount else {"sparsity": float(amount or 0.5)})}
            stages.append({"prune": cfg, "calibration": cal})
        if stages and p["distill_steps"]:
            stages.append({"distill": {**self.fixed.get("distill", {}), "loss": p["distill_loss"],
                                       "steps": int(p["distill_steps"])}})
        if p["quantize"] != "none":
            q: dict[str, Any] = {"scheme": p["quantize"], **self.fixed.get("quantize", {})}
            if p["quantize"] == "int4-weight":
                q["group_size"] = int(p["group_size"])
            if "quantize_skip" in params:
                q["skip"] = str(p["quantize_skip"])
            stages.append({"quantize": q, "calibration": cal})
        if not stages:
            return None
        name = "trial:" + ",".join(f"{k}={params[k]}" for k in sorted(params))
        return recipe_from_dict({"name": name, "stages": stages}, source=f"space {self.name}")

    def validate(self) -> None:
        """Build every single-key variation so that a bad value fails before the study starts."""
        base = {k: v[0] for k, v in self.choices.items()}
        for k, values in self.choices.items():
            for value in values:
                self.build({**base, k: value})


def space_from_dict(data: Any, source: str) -> Space:
    if not isinstance(data, dict) or not isinstance(data.get("choices"), dict) or not data["choices"]:
        raise ConfigError(f"{source}: a search space needs a 'choices' mapping of parameter -> list of values.")
    unknown = set(data["choices"]) - set(KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown choice(s) {sorted(unknown)}; valid keys: {', '.join(KEYS)}.")
    for k, v in data["choices"].items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{source}: choices.{k} must be a non-empty list.")
    extra = set(data) - {"name", "description", "choices", "fixed"}
    if extra:
        raise ConfigError(f"{source}: unknown field(s) {sorted(extra)}; use name, description, choices, fixed.")
    space = Space(name=str(data.get("name") or source), choices=data["choices"], fixed=data.get("fixed") or {},
                  description=str(data.get("description") or ""))
    space.validate()
    return space


def load_space(name_or_path: str | Path) -> Space:
    """``builtin`` (or another packaged name) or a YAML file."""
    source = str(name_or_path)
    path = Path(source)
    if path.is_dir():
        raise ConfigError(f"search space {path} is a directory; give a YAML file or 'builtin'.")
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"search space {path} is not UTF-8 text; give a YAML file or 'builtin'.") from None
        except OSError as exc:
            raise ConfigError(f"search space {path} cannot be read ({exc.strerror}).") from None
    else:
        packaged = resources.files("slimlm.search") / "spaces" / f"{source}.yaml"
        if not packaged.is_file():
            raise ConfigError(f"search space {source!r} is neither a file nor a builtin space (builtin: builtin).")
        text = packaged.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{source}: not valid YAML.") from None
    return space_from_dict(data, source=path.name if path.exists() else source)
