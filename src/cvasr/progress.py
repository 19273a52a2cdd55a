"""Progress bars that stay readable in log files as well as on a terminal."""

from __future__ import annotations

import sys
from typing import Any, Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], **kwargs: Any) -> Iterable[T]:
    """tqdm over `iterable`; off a terminal (run.sh tees into a log) it updates every 15 s."""
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 15.0)
    return tqdm(iterable, **kwargs)
