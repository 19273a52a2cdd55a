"""Progress reports that read well on a terminal (a tqdm bar) and in a log file (plain lines)."""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def _log_lines(iterable: Iterable[T], total: int | None, desc: str, unit: str,
               interval: float) -> Iterator[T]:
    start = last = time.monotonic()
    count = 0
    of = f"/{total}" if total is not None else ""
    for item in iterable:
        count += 1
        now = time.monotonic()
        if now - last >= interval:
            last = now
            print(f"{desc}: {count}{of} {unit}s, {count / (now - start):.1f} {unit}/s",
                  file=sys.stderr, flush=True)
        yield item
    elapsed = max(time.monotonic() - start, 1e-9)
    print(f"{desc}: {count}{of} {unit}s in {elapsed:.1f} s", file=sys.stderr, flush=True)


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, interval: float = 15.0, **kwargs: Any) -> Iterable[T]:
    """A tqdm bar on a terminal; off one (run.sh tees into a log) a line every `interval` s."""
    if disable:
        return iterable
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, **kwargs)
    return _log_lines(iterable, total, desc, unit, interval)
