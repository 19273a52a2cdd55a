"""No network at import: offline machines are the norm where the recipe runs.

espnet2 imports `g2p_en` whenever its ASR task or tokenizers are imported
(`espnet2.text.phoneme_tokenizer`), and `g2p_en` calls `nltk.download` at import for its tagger
and pronouncing dictionary when they are missing: a download attempt (and eight lines of
`[nltk_data] Error loading ...` offline) in every process that imports espnet2, though the recipe
never uses grapheme-to-phoneme conversion. `defer_network_imports` registers such modules as
deferred: importing them costs nothing, and the real module (downloads and all) is loaded on the
first use of one of its names, so a config that does use `g2p: g2p_en` still works.

`cvasr/__init__.py` calls it, so every process that imports any part of cvasr (the `cvasr`
commands, `python -m cvasr.training.task` and its DDP workers) gets it before espnet2 is imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

#: modules that reach for the network when imported, and that the recipe never uses
NETWORK_AT_IMPORT = ("g2p_en",)


class DeferredModule(types.ModuleType):
    """A stand-in in sys.modules whose dunder attributes are real (`inspect.getmodule` reads
    `__file__` of every module) and whose first other attribute loads the real module."""

    def __getattr__(self, attr: str):
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        return getattr(real, attr)


def defer_import(name: str) -> bool:
    """Put a DeferredModule for top-level module `name` in sys.modules; False when it is
    already imported or not installed."""
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)
    if spec is None:
        return False
    module = DeferredModule(name)
    module.__spec__ = spec
    module.__loader__ = spec.loader
    module.__file__ = spec.origin
    if spec.submodule_search_locations is not None:
        module.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = module
    return True


def defer_network_imports() -> None:
    for name in NETWORK_AT_IMPORT:
        defer_import(name)
