"""Validation every N epochs (`--valid_every_epochs`), with espnet2's n-best bookkeeping intact.

Why: espnet2 validates after every epoch. On a corpus the size of Common Voice Assamese an epoch
trains in about a second on an H200 and validation adds a fifth to it (bench/NOTES.md), while the
seed's own script does not evaluate during training at all. Validating every few epochs (and
always after the last, so the final model is scored and averaged) keeps the model selection
and costs a fraction.

espnet2's `Reporter.sort_epochs_and_values` reads the criterion of every epoch and fails on an
epoch that was not validated; `sort_validated_epochs` is the same sort over the epochs that were.
Everything that picks the n best (the best-model links, the early-stopping check, the epoch files
kept, the final average) goes through it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


def validates(epoch: int, every: int, max_epoch: int) -> bool:
    """Whether `epoch` (1-based) is validated: every `every`-th and the last."""
    return every <= 1 or epoch % every == 0 or epoch >= max_epoch


def sort_validated_epochs(reporter: Any, key: str, key2: str, mode: str) -> list[tuple[int, float]]:
    """(epoch, value) of the epochs that reported `key`.`key2`, best first, ties in epoch order
    (espnet2's `sort_epochs_and_values` where every epoch has it)."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must min or max: {mode}")
    values = [(epoch, stats[key][key2]) for epoch, stats in reporter.stats.items()
              if key in stats and key2 in stats[key]]
    if not values:
        raise KeyError(f"{key}.{key2} is not found: {reporter.get_all_keys()}")
    sign = 1 if mode == "min" else -1
    return sorted(values, key=lambda pair: sign * pair[1])


def has_validated(reporter: Any, key: str, key2: str, epoch: int | None = None) -> bool:
    """espnet2's `Reporter.has`; for the current epoch (no `epoch` given) whether any epoch
    reported it, so that the n best stay ranked (and kept) after an epoch without validation."""
    if epoch is not None:
        stats = reporter.stats.get(epoch, {})
        return key in stats and key2 in stats[key]
    return any(key in stats and key2 in stats[key] for stats in reporter.stats.values())


@contextlib.contextmanager
def ranking_validated_epochs() -> Iterator[None]:
    """espnet2's Reporter ranks and checks the validated epochs only, for the block's duration
    (espnet2's Trainer.run calls these methods on a Reporter it builds itself)."""
    from espnet2.train.reporter import Reporter

    originals = Reporter.has, Reporter.sort_epochs_and_values
    Reporter.has = has_validated
    Reporter.sort_epochs_and_values = sort_validated_epochs
    try:
        yield
    finally:
        Reporter.has, Reporter.sort_epochs_and_values = originals
