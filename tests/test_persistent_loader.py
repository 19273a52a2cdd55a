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


def epochs(factory, n: int, draws: bool = True, stop_early: int | None = None) -> list:
    """Each epoch's batches, what the workers drew, and what the training process draws after
    (`draws`; a GPU's training step draws nothing from the CPU's torch RNG). `stop_early`: that
    epoch is left after its first batch."""
    torch.manual_seed(0)
    out = []
    for epoch in range(1, n + 1):
        got = []
        for keys, batch in factory.build_iter(epoch):
            got.append((keys, batch["draw"].tolist()))
            if epoch == stop_early:
                break
        out.append(got)
        if draws:  # dropout masks and the like, in the training process
            out.append(torch.rand(2).tolist())
    out.append(torch.rand(2).tolist())  # the RNG where training left it
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


@pytest.mark.parametrize("iters_per_epoch", [None, 3])
@pytest.mark.parametrize("draws", [False, True])
def test_prefetch_next_epoch_keeps_espnet2s_batches_and_draws(iters_per_epoch, draws) -> None:
    # 5 batches over 2 workers: the epoch after starts on the other worker; 3 batches: an epoch
    # shorter than the DataLoader's prefetch of 4
    batches = [[f"u{i}", f"u{i + 1}"] for i in range(0, 10, 2)]
    kwargs = dict(seed=3, shuffle=True, num_workers=2, collate_fn=collate,
                  num_iters_per_epoch=iters_per_epoch)
    want = epochs(SequenceIterFactory(RandomDraws(), batches, **kwargs), 4, draws)
    factory = PersistentSequenceIterFactory(RandomDraws(), batches, prefetch_next_epoch=True,
                                            **kwargs)
    assert epochs(factory, 4, draws) == want
    loader = factory.build_iter(5)
    if draws:  # the seed guessed for the next epoch's workers was not the one it drew: reset
        assert (loader.prefetched_epochs, loader.reset_epochs) == (0, 3)
    elif iters_per_epoch is None:  # every later epoch's first batches loaded in the one before
        assert (loader.prefetched_epochs, loader.reset_epochs) == (3, 0)
    else:  # the prefetch reached the end of epoch 2 before epoch 2 began: 3 starts afresh
        assert (loader.prefetched_epochs, loader.reset_epochs) == (2, 1)


def test_prefetch_after_an_epoch_left_early_starts_afresh() -> None:
    batches = [[f"u{i}", f"u{i + 1}"] for i in range(0, 10, 2)]
    kwargs = dict(seed=3, shuffle=True, num_workers=2, collate_fn=collate)
    want = epochs(SequenceIterFactory(RandomDraws(), batches, **kwargs), 3, False, stop_early=2)
    factory = PersistentSequenceIterFactory(RandomDraws(), batches, prefetch_next_epoch=True,
                                            **kwargs)
    assert epochs(factory, 3, False, stop_early=2) == want
    loader = factory.build_iter(4)
    assert (loader.prefetched_epochs, loader.reset_epochs) == (1, 1)


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


def test_prefetch_is_for_training_on_gpu_only() -> None:
    from cvasr.training.task import CvasrASRTask, prefetches_next_epoch

    args = CvasrASRTask.get_parser().parse_args(["--output_dir", "x", "--token_list", "t",
                                                 "--ngpu", "1"])
    assert args.prefetch_next_epoch is True  # the default
    assert prefetches_next_epoch(args, "train")
    assert not prefetches_next_epoch(args, "valid")  # validation's iterator draws its own
    args.ngpu = 0  # on CPU the step's dropout draws from the seed's RNG
    assert not prefetches_next_epoch(args, "train")
    args.ngpu, args.prefetch_next_epoch = 1, False
    assert not prefetches_next_epoch(args, "train")


def test_close_stops_the_workers_and_a_later_epoch_starts_new_ones() -> None:
    """At the training's end: on a GPU torch's exit would wait 5 s for each live persistent
    worker (pinned memory), so stage 4 stops them first; the process's exit then joins workers
    already gone."""
    batches = [["u0", "u1"], ["u2", "u3"]]
    factory = PersistentSequenceIterFactory(RandomDraws(), batches, num_workers=2,
                                            collate_fn=collate, prefetch_next_epoch=True)
    first = factory.build_iter(1)
    list(first)  # the workers now load epoch 2's first batches (prefetch)
    workers = list(first.loader._iterator._workers)
    assert all(w.is_alive() for w in workers)
    factory.close()
    assert not any(w.is_alive() for w in workers)
    assert [w.exitcode for w in workers] == [0, 0]  # stopped, not killed
    again = factory.build_iter(2)
    assert [k for k, _ in again] == batches
    assert not set(again.loader._iterator._workers) & set(workers)
    factory.close()
    factory.close()  # twice is harmless
