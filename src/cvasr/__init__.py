"""cvasr: a Common Voice speech recognition recipe (XLS-R 300M + CTC on espnet2), Assamese first.

`from cvasr import Transcriber` is the Python API for transcribing audio with a trained
experiment (cvasr.decoding.transcriber). It is imported on first use, so that `import cvasr`
and the recipe's other modules do not pay for torch.
"""

__version__ = "0.1.0"

_API = ("Transcriber", "Transcript", "TimedSegment")


def __getattr__(name: str):
    if name in _API:
        from cvasr.decoding import transcriber

        return getattr(transcriber, name)
    raise AttributeError(f"module 'cvasr' has no attribute {name!r}")
