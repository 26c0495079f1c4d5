"""Search spaces: categorical choices over recipe parameters, and the builder that turns a pick into a recipe.

A space file:

    name: builtin
    choices:                      # each trial picks one value per key
      layers: [0, 2, 4, 6]        # structured: whole layers removed (count or fraction)
      ffn: [0.0, 0.25]            # structured: share of FFN channels removed
      heads: [0.0]                # structured: share of attention heads removed
      vocab: [none, domain]       # structured: trim the vocabulary to the tokens the domain uses
      vocab_keep: [none, pydoc]   # with vocab=domain: also keep this corpus's tokens (general text stays whole)
      unstructured: [none, wanda:0.5, sparsegpt:2:4]   # method:sparsity or method:N:M
      distill_steps: [0, 20]      # distillation after pruning (skipped when nothing was pruned)
      distill_loss: [kl]
      distill_alpha: [0.0, 0.5]   # hard-label CE share of the distillation loss
      distill_general_share: [0.0, 0.5]   # share of general rows (set fixed.distill.general_data)
      quantize: [none, int8-dynamic, int8-weight, int4-weight]
      quantize_skip: ["lm_head,embed", embed, none]   # parts kept in fp32 (default both; none: quantize all)
      quantize_fallback: [none, 2%, "int8:1%"]   # sensitive layers back to fp32, or to int8 (per-layer precision)
      group_size: [32, 64]        # int4 only
      int4_kernel: [dequant, int4pack]   # int4 only: fp32 reference, or torch's CPU int4 kernel (faster)
      smoothquant: [none, 0.5, 0.8]   # int8-dynamic only: SmoothQuant migration strength
      lowrank: [0.0, 0.5]         # truncated-SVD factorisation, share of rank kept (0: off)
    fixed:                        # settings every trial shares
      calibration: {samples: 32, seq_len: 256}
      distill: {lr: 3.0e-4, batch_size: 4, seq_len: 256, eval_every: 10}
    pruner: median                # stop hopeless distillations early (needs distill eval_every); none: off

Every choice is categorical: recipe parameters are few and discrete, and categorical picks make trials that
share a prefix (same pruning) hit the stage cache. Omitted keys take "off" values. The keys are not listed
here: each registered method declares the ones it reads (``space``) and builds its stage from a pick
(``from_pick``), so a new method brings its own search dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from slimlm.errors import ConfigError
from slimlm.methods import methods
from slimlm.recipes import Recipe, recipe_from_dict
from slimlm.search.pruning import PrunerSettings, parse_pruner

FAMILIES = ("prune", "distill", "quantize")  # a trial's stages, in this order


def space_keys() -> dict[str, Any]:
    """Every key a space may set, with its "off" value: what the registered methods declare (``space``)."""
    keys: dict[str, Any] = {}
    for family in FAMILIES:
        for cls in methods(family).values():
            keys.update(cls.space)
    return keys


@dataclass(frozen=True)
class Space:
    name: str
    choices: dict[str, list]
    fixed: dict[str, Any]
    description: str = ""
    pruner: PrunerSettings = PrunerSettings()

    def build(self, params: dict[str, Any]) -> Recipe | None:
        """The recipe for one pick of parameters (None when the pick changes nothing: the baseline)."""
        p = {**space_keys(), **params, "_given": set(params)}
        stages: list[dict] = []
        for family in FAMILIES:  # each family contributes at most one stage: the first method that claims the pick
            for cls in methods(family).values():
                stage = cls.from_pick(p, self.fixed, stages)
                if stage is not None:
                    stages.append(stage)
                    break
        if not stages:
            return None
        name = "trial:" + ",".join(f"{k}={params[k]}" for k in sorted(params))
        return recipe_from_dict({"name": name, "stages": stages}, source=f"space {self.name}")

    def fit(self, model) -> tuple[Space, list[str]]:
        """This space without the values ``model`` cannot take (a layer count a shallow model does not have),
        and one sentence per value left out. A key left with no value fails (`ConfigError`)."""
        choices, dropped = {}, []
        for k, values in self.choices.items():
            kept = []
            for value in values:
                why = next((w for f in FAMILIES for c in methods(f).values() if k in c.space
                            and (w := c.check_model_value(k, value, model))), None)
                if why:
                    dropped.append(f"{k}={value}: {why}")
                else:
                    kept.append(value)
            if not kept:
                raise ConfigError(f"space {self.name}: {model.spec} can take none of {k}={values} ({dropped[-1]}).")
            choices[k] = kept
        return Space(self.name, choices, self.fixed, self.description, self.pruner), dropped

    def validate(self) -> None:
        """Build every single-key variation so that a bad value fails before the study starts."""
        for k, values in self.choices.items():
            for cls in (c for f in FAMILIES for c in methods(f).values() if k in c.space):
                for value in values:
                    why = cls.check_space_value(k, value)
                    if why:
                        raise ConfigError(f"space {self.name}: {why}.")
        base = {k: v[0] for k, v in self.choices.items()}
        for k, values in self.choices.items():
            for value in values:
                self.build({**base, k: value})


def space_from_dict(data: Any, source: str) -> Space:
    if not isinstance(data, dict) or not isinstance(data.get("choices"), dict) or not data["choices"]:
        raise ConfigError(f"{source}: a search space needs a 'choices' mapping of parameter -> list of values.")
    keys = space_keys()
    unknown = set(data["choices"]) - set(keys)
    if unknown:
        raise ConfigError(f"{source}: unknown choice(s) {sorted(unknown)}; valid keys: {', '.join(keys)}.")
    for k, v in data["choices"].items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{source}: choices.{k} must be a non-empty list.")
    extra = set(data) - {"name", "description", "choices", "fixed", "pruner"}
    if extra:
        raise ConfigError(f"{source}: unknown field(s) {sorted(extra)}; use name, description, choices, fixed, "
                          "pruner.")
    space = Space(name=str(data.get("name") or source), choices=data["choices"], fixed=data.get("fixed") or {},
                  description=str(data.get("description") or ""), pruner=parse_pruner(data.get("pruner"), source))
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
            names = sorted(f.name[:-5] for f in (resources.files("slimlm.search") / "spaces").iterdir()
                           if f.name.endswith(".yaml"))
            raise ConfigError(f"search space {source!r} is neither a file nor a builtin space ({', '.join(names)}).")
        text = packaged.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{source}: not valid YAML.") from None
    return space_from_dict(data, source=path.name if path.exists() else source)
