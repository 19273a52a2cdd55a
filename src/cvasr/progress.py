"""Progress reports that read well on a terminal (a tqdm bar) and in a log file (plain lines).

On its own a command draws a tqdm bar on a terminal (stderr) and writes a plain line every
`interval` seconds when stderr is a file. Under run.sh (`cvasr.console`) the progress goes to
the console: a bar when the console is a terminal, plain lines when it is not (output piped or
captured), and the stage log gets the final line.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Iterable, Iterator, TypeVar

from tqdm import tqdm

from cvasr.console import console, say

T = TypeVar("T")


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _log_lines(iterable: Iterable[T], total: int | None, desc: str, unit: str,
               interval: float, emit: Callable[[str], None] = _stderr_line) -> Iterator[T]:
    start = last = time.monotonic()
    count = 0
    of = f"/{total}" if total is not None else ""
    for item in iterable:
        count += 1
        now = time.monotonic()
        if now - last >= interval:
            last = now
            emit(f"{desc}: {count}{of} {unit}s, {count / (now - start):.1f} {unit}/s")
        yield item
    elapsed = max(time.monotonic() - start, 1e-9)
    emit(f"{desc}: {count}{of} {unit}s in {elapsed:.1f} s")


def _bar_then_line(iterable: Iterable[T], total: int | None, desc: str, unit: str,
                   **kwargs: Any) -> Iterator[T]:
    """A tqdm bar on the console, and one line in the stage log at the end."""
    start = time.monotonic()
    count = 0
    for item in tqdm(iterable, total=total, desc=desc, unit=unit, file=console(), **kwargs):
        count += 1
        yield item
    of = f"/{total}" if total is not None else ""
    print(f"{desc}: {count}{of} {unit}s in {max(time.monotonic() - start, 1e-9):.1f} s",
          flush=True)


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, interval: float = 15.0, **kwargs: Any) -> Iterable[T]:
    """A tqdm bar on a terminal; off one (a log file, a pipe) a line every `interval` s."""
    if disable:
        return iterable
    stream = console()
    if stream is not None:
        if stream.isatty():
            return _bar_then_line(iterable, total, desc, unit, **kwargs)
        return _log_lines(iterable, total, desc, unit, interval, emit=say)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, **kwargs)
    return _log_lines(iterable, total, desc, unit, interval)
