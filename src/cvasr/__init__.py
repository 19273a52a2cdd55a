"""cvasr: a Common Voice speech recognition recipe (XLS-R 300M + CTC on espnet2), Assamese first.

`from cvasr import Transcriber` is the Python API for transcribing audio with a trained
experiment (cvasr.decoding.transcriber). It is imported on first use, so that `import cvasr`
and the recipe's other modules do not pay for torch.
"""

from cvasr.deferred_typechecks import defer_typeguard_instrumentation
from cvasr.offline import defer_network_imports

__version__ = "0.1.0"

# Before anything imports espnet2: g2p_en's nltk downloads at import (cvasr.offline), and
# typeguard's instrumentation of ~220 espnet2 functions at import (cvasr.deferred_typechecks).
defer_network_imports()
defer_typeguard_instrumentation()

# Our experiments name a frontend, encoder and model of ours: make them known to stock espnet2
# (Speech2Text and the like) as soon as it loads its ASR task, without importing espnet2 here.
from cvasr.models.espnet_choices import register_when_espnet2_loads as _register  # noqa: E402

_register()

_API = ("Transcriber", "Transcript", "TimedSegment")


def __getattr__(name: str):
    if name in _API:
        from cvasr.decoding import transcriber

        return getattr(transcriber, name)
    raise AttributeError(f"module 'cvasr' has no attribute {name!r}")
