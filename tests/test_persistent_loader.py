"""Persistent DataLoader workers give espnet2's batches in its order, with its worker seeds."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from espnet2.iterators.sequence_iter_factory import SequenceIterFactory

from cvasr.speedups.persistent_loader import PersistentSequenceIterFactory


class RandomDraws(torch.utils.data.Dataset):
    """What a worker's RNG gives for each key: random preprocessing in a worker would draw it."""

    def __getitem__(self, key: str):
        draws = [np.random.rand(), random.random(), torch.rand(()).item()]
        return key, {"draw": np.array(draws), "n": np.array([int(key[1:])])}

    def __len__(self) -> int:
        return 10


def collate(items):
    keys = [k for k, _ in items]
    return keys, {"draw": torch.tensor(np.concatenate([d["draw"] for _, d in items])),
                  "n": torch.tensor(np.concatenate([d["n"] for _, d in items]))}


def epochs(factory, n: int) -> list:
    """Each epoch's batches, what the workers drew, and what the training process draws after."""
    torch.manual_seed(0)
    out = []
    for epoch in range(1, n + 1):
        out.append([(keys, batch["draw"].tolist()) for keys, batch in factory.build_iter(epoch)])
        out.append(torch.rand(2).tolist())  # dropout masks and the like, in the training process
    return out


@pytest.mark.parametrize("iters_per_epoch", [None, 3])
def test_same_batches_order_and_worker_draws_as_espnet2(iters_per_epoch) -> None:
    batches = [[f"u{i}", f"u{i + 1}"] for i in range(0, 10, 2)]
    kwargs = dict(seed=3, shuffle=True, num_workers=2, collate_fn=collate,
                  num_iters_per_epoch=iters_per_epoch)
    want = epochs(SequenceIterFactory(RandomDraws(), batches, **kwargs), 3)
    got = epochs(PersistentSequenceIterFactory(RandomDraws(), batches, **kwargs), 3)
    assert got == want
    assert want[0] != want[2]  # the order and the draws change with the epoch (1 vs 2)


def test_workers_are_started_once() -> None:
    batches = [["u0", "u1"], ["u2", "u3"]]
    factory = PersistentSequenceIterFactory(RandomDraws(), batches, num_workers=1,
                                            collate_fn=collate)
    first = factory.build_iter(1)
    list(first)
    workers = list(first.loader._iterator._workers)
    second = factory.build_iter(2)
    assert second is first
    assert [k for k, _ in second] == [["u0", "u1"], ["u2", "u3"]]
    assert second.loader._iterator._workers == workers and all(w.is_alive() for w in workers)


def test_needs_workers() -> None:
    with pytest.raises(ValueError, match="num_workers >= 1"):
        PersistentSequenceIterFactory(RandomDraws(), [["u0"]], num_workers=0)
