"""Keep third-party chatter out of the console, without hiding what explains a failure.

Importing and building espnet2's model pieces prints on stdout ("Failed to import Flash
Attention, using ESPnet default", from espnet's attention module), logs ("Set decoder to none
as ctc_weight==1.0") and warns (torchaudio's empty mel filters, deprecated autocast calls).
None of it is ours to act on, and on stdout it breaks pipes that expect only results
(`cvasr transcribe ... | cut -f2`). `captured_chatter` holds all of it back while a block runs:
dropped if the block succeeds, written to stderr before the error if it fails, so a real
failure still comes with whatever the library said about it. `espnet2_forward_deprecations`
drops the one warning espnet2's forward pass raises on every new process (for a block, or with
`drop_espnet2_forward_deprecations` for the whole of a training process).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from typing import Iterator, TextIO


class _BufferHandler(logging.Handler):
    def __init__(self, buffer: io.StringIO) -> None:
        super().__init__(logging.NOTSET)
        self.buffer = buffer
        self.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.buffer.write(self.format(record) + "\n")


@contextlib.contextmanager
def captured_chatter(keep: TextIO | None = None) -> Iterator[io.StringIO]:
    """Run a block with what it prints (Python's stdout and stderr), warns and logs (root
    logger) held back in a buffer; on success the buffer goes to `keep` (e.g. a log file) or
    nowhere, on failure to stderr before the exception propagates.

    A handler on the root logger for the block's duration also keeps `logging.warning()`
    from calling `basicConfig()` and leaving a handler bound to the captured stream behind.
    """
    buffer = io.StringIO()
    handler = _BufferHandler(buffer)
    root = logging.getLogger()
    root.addHandler(handler)
    ok = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                try:
                    yield buffer
                finally:
                    for w in caught:
                        buffer.write(warnings.formatwarning(w.message, w.category, w.filename,
                                                            w.lineno, w.line))
        ok = True
    finally:
        root.removeHandler(handler)
        text = buffer.getvalue()
        if not ok and text:
            sys.stderr.write(text if text.endswith("\n") else text + "\n")
        elif ok and keep is not None and text:
            keep.write(text)


# espnet2's ESPnetASRModel.encode enters `torch.cuda.amp.autocast(...)`, which torch 2.11
# deprecates with a FutureWarning, even on a CPU (espnet 202511)
_ESPNET2_AUTOCAST = r"`torch\.cuda\.amp\.autocast\(args\.\.\.\)` is deprecated"
# s3prl's wav2vec 2.0 builds its positional conv with the deprecated torch.nn.utils.weight_norm
_S3PRL_WEIGHT_NORM = r".*weight_norm.*"


@contextlib.contextmanager
def _future_warning_dropped(message: str) -> Iterator[None]:
    """Run a block with the FutureWarnings whose message matches `message` dropped; any other
    warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
        yield


def espnet2_forward_deprecations() -> contextlib.AbstractContextManager[None]:
    """Run a block that calls espnet2's forward pass without its autocast deprecation warning:
    not ours to act on, and on `cvasr decode`'s console it reads like a problem."""
    return _future_warning_dropped(_ESPNET2_AUTOCAST)


def drop_espnet2_forward_deprecations() -> None:
    """For the rest of the process (stage 4's training): espnet2's autocast deprecation, which
    torch's own `warnings.catch_warnings` blocks make Python show again and again (30 times in
    the train.log of a 50-epoch run on an H200, bench/NOTES.md round 23)."""
    warnings.filterwarnings("ignore", message=_ESPNET2_AUTOCAST, category=FutureWarning)


def s3prl_weight_norm_deprecations() -> contextlib.AbstractContextManager[None]:
    """Run a block that builds s3prl's wav2vec 2.0 without its weight_norm deprecation warning."""
    return _future_warning_dropped(_S3PRL_WEIGHT_NORM)
