"""Run a callback as soon as a module has been imported, without importing it ourselves.

`import cvasr` must stay cheap (every `cvasr` command imports it) yet adjust some third-party
modules before anything uses them: our names in espnet2's ASR task (cvasr.models.espnet_choices),
typeguard's decorator (cvasr.deferred_typechecks). `after_import` calls the callback at once if
the module is already imported, else right after the module's own code has run, through a
finder at the head of `sys.meta_path` that removes itself once it has found the module.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Callable


class _CallAfterLoading(importlib.abc.Loader):
    """Runs a module with its own loader, then the callback on it."""

    def __init__(self, loader: importlib.abc.Loader,
                 callback: Callable[[ModuleType], None]) -> None:
        self.loader = loader
        self.callback = callback

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.callback(module)


class _AfterImportFinder(importlib.abc.MetaPathFinder):
    """Finds one module as the other finders do, with the callback's loader around theirs."""

    def __init__(self, name: str, callback: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.callback = callback

    def find_spec(self, name, path, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)  # once: the real finders answer from here on
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _CallAfterLoading(spec.loader, self.callback)
        return spec


def after_import(name: str, callback: Callable[[ModuleType], None]) -> None:
    """`callback(module)` now if module `name` is imported, else right after it is (once per
    name and callback, however often this is called)."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
    elif not any(isinstance(f, _AfterImportFinder) and (f.name, f.callback) == (name, callback)
                 for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImportFinder(name, callback))
