"""Subpackages that are also public verbs: ``slimlm.evaluate`` is both the package and the function.

Python binds ``slimlm.evaluate`` to the subpackage as soon as anything imports it, which would shadow the
public verb of the same name. Each such package therefore makes its module object callable: calling it
calls the verb, named by ``"module:function"`` and imported on first call, so ``slimlm.evaluate(model, data)``
works however the package was reached, and ``from slimlm.evaluate import ...`` keeps working as before.
"""

from __future__ import annotations

import importlib
import sys
import types


class VerbModule(types.ModuleType):
    """A module that, when called, calls its public verb (``__verb__ = "module:function"``)."""

    __verb__: str = ""

    def __call__(self, *args, **kwargs):
        module, _, name = self.__verb__.partition(":")
        return getattr(importlib.import_module(module), name)(*args, **kwargs)


def make_callable(module_name: str, verb: str) -> None:
    """Make the module ``module_name`` callable as ``verb`` (``"slimlm.evaluate:evaluate"``)."""
    mod = sys.modules[module_name]
    mod.__class__ = VerbModule
    mod.__verb__ = verb
