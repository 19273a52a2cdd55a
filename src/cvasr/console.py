"""The recipe's console: the few lines a person reads, apart from the full log.

Under run.sh every stage's stdout and stderr go to its log (`exp/logs/stageN_<name>.log`) and
nowhere else, so espnet2's INFO lines, model dumps, warnings and anything a library prints stay
there. run.sh hands the terminal to the stage as a separate file descriptor, named in the
environment variable CVASR_CONSOLE_FD; `say` writes a line to stdout (the log, in order with
everything else) and to that descriptor (the console). Outside run.sh there is no console
descriptor: `say` writes to stdout alone and `error` to stderr alone, as any command would.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import TextIO

#: the environment variable that names the console's file descriptor (set by run.sh)
CONSOLE_FD = "CVASR_CONSOLE_FD"


@lru_cache(maxsize=1)
def console() -> TextIO | None:
    """The console stream under run.sh, else None (also when the descriptor is not open)."""
    value = os.environ.get(CONSOLE_FD, "")
    if not value.isdigit():
        return None
    fd = int(value)
    try:
        os.fstat(fd)
    except OSError:
        return None
    return open(fd, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)


def console_is_terminal() -> bool:
    stream = console()
    return stream is not None and stream.isatty()


def _write(stream: TextIO, line: str) -> None:
    try:
        stream.write(line + "\n")
        stream.flush()
    except OSError:
        # a log that cannot be written (a full disk) must not hide the line from the console,
        # nor replace the error being reported
        pass


def say(line: str) -> None:
    """A line that matters: to stdout (the stage log under run.sh) and to the console."""
    _write(sys.stdout, line)
    if (stream := console()) is not None:
        _write(stream, line)


def to_console(line: str) -> None:
    """A line for the console alone (under run.sh; nowhere otherwise), e.g. live progress that
    the log records once, at the end."""
    if (stream := console()) is not None:
        _write(stream, line)


def error(line: str) -> None:
    """An error: to stderr (the stage log under run.sh) and to the console."""
    _write(sys.stderr, line)
    if (stream := console()) is not None:
        _write(stream, line)


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process that does not inherit the console descriptor
    (Python's subprocess closes it): without CVASR_CONSOLE_FD."""
    env = dict(os.environ if env is None else env)
    env.pop(CONSOLE_FD, None)
    return env
