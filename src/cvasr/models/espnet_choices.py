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

from types import ModuleType

from cvasr.import_hooks import after_import

#: the module whose ClassChoices we extend
ESPNET2_ASR_TASK = "espnet2.tasks.asr"


def register() -> None:
    """Add our frontend, encoder and model to espnet2's ASR task (idempotent; the names and
    classes are stated once, in cvasr.models.loader)."""
    from cvasr.models.loader import register_with_espnet2

    register_with_espnet2()


def _register_into(task: ModuleType) -> None:
    register()


def register_when_espnet2_loads() -> None:
    """`register()` now if espnet2's ASR task is loaded, else right after it loads."""
    after_import(ESPNET2_ASR_TASK, _register_into)
