"""Stage 4's console: one line an epoch, read from espnet2's training output.

espnet2 logs a line every few batches and, at the end of every epoch, one `Nepoch results:` line
holding every statistic of the epoch's training and validation; with the model dump, the
optimizer and warnings that is hundreds of lines a run, all kept in the experiment's train.log
and the stage log. The console gets, for each epoch, the losses, the validation error rates and
the wall-clock time since the previous epoch ended (checkpoints and plots included), e.g.
``epoch 3/10  train loss 25.33  valid loss 30.12  CER 45.2%  WER 95.1%  (15.3 s)``.
"""

from __future__ import annotations

import math
import re
import time
from typing import Callable

_STARTED = re.compile(r"\b(\d+)/(\d+)epoch started")
_RESULTS = re.compile(r"\b(\d+)epoch results: (.*)$")
_SECTION = re.compile(r"\[(\w+)\] (.*?)(?=, \[\w+\] |$)")
_VALUE = re.compile(r"(\w+)=([-+0-9.einfa]+)")


def parse_results(text: str) -> dict[str, dict[str, float]]:
    """`[train] a=1.0, b=2 ... [valid] c=3` -> {"train": {"a": 1.0, ...}, "valid": {...}}."""
    out: dict[str, dict[str, float]] = {}
    for phase, body in _SECTION.findall(text):
        values = out.setdefault(phase, {})
        for key, value in _VALUE.findall(body):
            try:
                values[key] = float(value)
            except ValueError:
                pass
    return out


def _first(values: dict[str, float], *keys: str) -> float | None:
    for key in keys:
        value = values.get(key)
        if value is not None and not math.isnan(value):
            return value
    return None


class EpochLines:
    """Feed it espnet2's output line by line; it returns a console line at each epoch's end."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.max_epoch: int | None = None
        self.last = clock()

    def __call__(self, line: str) -> str | None:
        started = _STARTED.search(line)
        if started and self.max_epoch is None:
            self.max_epoch = int(started.group(2))
            self.last = self.clock()  # start-up (imports, model building) is not an epoch
            return None
        results = _RESULTS.search(line)
        if not results:
            return None
        epoch = int(results.group(1))
        stats = parse_results(results.group(2))
        now = self.clock()
        seconds, self.last = now - self.last, now
        train, valid = stats.get("train", {}), stats.get("valid", {})
        parts = [f"epoch {epoch}/{self.max_epoch}" if self.max_epoch else f"epoch {epoch}"]
        for name, value in (("train loss", _first(train, "loss")),
                            ("valid loss", _first(valid, "loss"))):
            if value is not None:
                parts.append(f"{name} {value:.2f}")
        for name, keys in (("CER", ("cer_ctc", "cer")), ("WER", ("wer_ctc", "wer"))):
            value = _first(valid, *keys)
            if value is not None:
                parts.append(f"{name} {100 * value:.1f}%")
        return "  ".join(parts) + f"  ({seconds:.1f} s)"
