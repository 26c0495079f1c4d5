"""slimlm: compress a transformer language model to the smallest, fastest variant that meets its quality bar.

The public API is ten verbs; everything else is an implementation detail. ``import slimlm`` stays fast (no
torch, no network): each name is imported on first use. Five verbs share their name with a subpackage
(``evaluate``, ``profile``, ``distill``, ``search``, ``report``): those packages are callable, so
``slimlm.evaluate(model, data)`` calls the verb whichever of the two Python has bound to the name.

Example:
    >>> import slimlm
    >>> model = slimlm.load("tiny:llama")
    >>> slimlm.quantize_(model, slimlm.quantize.Int8DynamicConfig())["quantized"]  # doctest: +SKIP

| name | what it does |
|---|---|
| `load(spec)` / `save(model, dir)` | a model from a spec (builtin, tiny, HF dir, .gguf, hub id) / a variant directory |
| `prune_(model, config, calib)` | pruning in place (unstructured, N:M, structured, low rank) |
| `quantize_(model, config, calib)` | quantization in place (int8, int4, SmoothQuant, GPTQ, QAT) |
| `distill(student, teacher, corpus, config)` | knowledge distillation; returns the trained student |
| `evaluate(model, corpus)` / `profile(model)` | quality / efficiency measurements |
| `compress(model, recipes, out)` / `search(model, space, out)` | the end-to-end jobs (run, select, report) |
| `report(run_dir)` | re-render a run directory's report and decision record |
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "load": ("slimlm.models", "load"),
    "save": ("slimlm.models", "save"),
    "prune_": ("slimlm.prune", "prune_"),
    "quantize_": ("slimlm.quantize", "quantize_"),
    "distill": ("slimlm.distill", "distill"),
    "evaluate": ("slimlm.evaluate", "evaluate"),
    "profile": ("slimlm.profile", "profile"),
    "compress": ("slimlm.workflows", "compress"),
    "search": ("slimlm.workflows", "search"),
    "report": ("slimlm.report", "write_report"),
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        module, attr = _API[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'slimlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
