"""The names the recipe's configs use, registered with espnet2's ASR task, also for stock espnet2.

`frontend: wav2vec2_s3prl`, `encoder: identity` and `model: cvasr_ctc` are ours; espnet2 builds a
model from a config by looking names up in its `ClassChoices`, so they must be added there before
any experiment of ours is built: by `cvasr.training.task` (training and our decoding), and, for
stock espnet2 (`espnet2.bin.asr_inference.Speech2Text`, `espnet2.bin.asr_train`), by `import
cvasr`, which calls `register_when_espnet2_loads`. That registers at once if espnet2's ASR task
is already imported, else as soon as it is: `import cvasr` itself must stay cheap (every `cvasr`
command imports it), so it does not import espnet2.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

#: the module whose ClassChoices we extend
ESPNET2_ASR_TASK = "espnet2.tasks.asr"


def register() -> None:
    """Add our frontend, encoder and model to espnet2's ASR task (idempotent; the names and
    classes are stated once, in cvasr.models.loader)."""
    from cvasr.models.loader import register_with_espnet2

    register_with_espnet2()


class _RegisterAfterLoading(importlib.abc.Loader):
    """Runs espnet2's ASR task module with its own loader, then `register()`."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        register()


class _ASRTaskFinder(importlib.abc.MetaPathFinder):
    """Finds espnet2's ASR task module as the other finders do, with our loader around theirs."""

    def find_spec(self, name, path, target=None):
        if name != ESPNET2_ASR_TASK:
            return None
        sys.meta_path.remove(self)  # once: the real finders answer from here on
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfterLoading(spec.loader)
        return spec


def register_when_espnet2_loads() -> None:
    """`register()` now if espnet2's ASR task is loaded, else right after it loads."""
    if ESPNET2_ASR_TASK in sys.modules:
        register()
    elif not any(isinstance(f, _ASRTaskFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _ASRTaskFinder())
