"""A full disk said plainly: "no space left on device writing PATH".

A write to a full filesystem fails in many voices: OSError ENOSPC from Python (often without a
file name, when a buffered write is flushed), "System error." from libsndfile, "file write
failed" from torch's checkpoint writer, a traceback in a child process's log. `no_space_message`
recognises them all: the error (or one it was raised from) carries ENOSPC or says "No space left
on device", or, for an error that does not say what went wrong (a RuntimeError, an OSError
without an errno), the filesystem of the output being written has next to nothing left. An error
that names another cause ("no trained model") keeps it, full disk or not. The `cvasr` commands
report every failure through it, so each stage says the same thing for the same cause.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterator, Sequence

#: a filesystem with fewer free bytes than this, right after a write failed, is full
FULL_BELOW = 1 << 20
ENOSPC_TEXT = os.strerror(errno.ENOSPC)  # "No space left on device"


def free_bytes(path: Path) -> int | None:
    """Bytes free to this user on the filesystem that holds `path` (or would, once made)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        try:
            st = os.statvfs(candidate)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize
    return None


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _says_nothing(err: BaseException) -> bool:
    """An error that does not name its cause: libsndfile's "System error.", torch's "file write
    failed", a child process's exit status."""
    if isinstance(err, OSError):
        return err.errno is None
    return type(err) is RuntimeError or type(err).__name__ == "LibsndfileError"


def no_space_message(err: BaseException, outputs: Sequence[Path] = ()) -> str | None:
    """The message for `err` if a full disk caused it, else None. `outputs` are what the failing
    step writes (files or folders), the first one named when the error names no file."""
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            where = e.filename if e.filename is not None else (outputs[0] if outputs else None)
            return f"no space left on device writing {where}" if where else \
                "no space left on device"
    if any(ENOSPC_TEXT in str(e) for e in _chain(err)):
        return f"no space left on device writing {outputs[0]}" if outputs else \
            "no space left on device"
    if not _says_nothing(err):
        return None
    for out in outputs:
        free = free_bytes(Path(out))
        if free is not None and free < FULL_BELOW:
            return f"no space left on device writing {out} ({free} bytes free there)"
    return None
