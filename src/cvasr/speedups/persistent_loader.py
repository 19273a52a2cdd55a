"""espnet2's sequence iterator with DataLoader workers kept from one epoch to the next.

Why: espnet2's `SequenceIterFactory.build_iter` builds a new DataLoader every epoch, so every
epoch forks `num_workers` new processes from the training process (a process of several GB
with the CUDA context) and waits for their first batches. Common Voice Assamese has 508
training clips: 15 steps an epoch at 32 clips, so that start-up is paid every 15 steps. On an
H200 the wait for batches grew with the workers (4: 23-29 ms a step, 8: 54 ms, 12: 74-82 ms;
bench/NOTES.md), while the step itself took about 80 ms.

`PersistentSequenceIterFactory` keeps one DataLoader with `persistent_workers=True` and hands it
each epoch's batches, which it takes from espnet2's own `build_iter` (the same batches in the same
order, `num_iters_per_epoch` and shuffling included). The random numbers stay those of espnet2's
loop too: a new DataLoader iterator draws its workers' base seed from the training process's
torch RNG, so each later epoch draws it here as well (the dropout and SpecAugment masks drawn
after it are unchanged), and a worker starting on an epoch's batches reseeds itself as a fresh
worker would be seeded: torch with that base seed + worker id, `random` and `np.random` by
espnet2's `worker_init_fn` (epoch + seed + worker id).

`prefetch_next_epoch`: the workers load the next epoch's first batches while this one trains.
Without it an epoch started with the GPU idle, waiting for its first batch: 56-92 ms of a 0.9 s
epoch on an H200 with the XLS-R step (bench/NOTES.md, round 18). The DataLoader's iteration
runs on into the next epoch's batches once this epoch's are dealt out, with the seed the next
epoch would draw if nothing else drew from the torch RNG first (peeked, not drawn); the next
`build_iter` draws it, and uses the running iteration only if the seed and the batches are
the ones guessed, else starts afresh (the prefetched batches dropped). A GPU's training step
draws nothing from that RNG, so there the guess holds but after a validation epoch (whose
iterator draws too); on CPU the step's dropout draws from it, so the factory is built without
the option there. The batches reach the same workers in turn as a new iteration would deal
them, and each worker seeds itself as the worker a new DataLoader gives that batch.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Sequence

import torch
from espnet2.iterators.sequence_iter_factory import SequenceIterFactory, worker_init_fn
from torch.utils.data import DataLoader


class _EpochBatches:
    """The persistent DataLoader's batch sampler: an epoch's batches, each key tagged with the
    epoch and its workers' base seed; with `follow` set, then the batches `follow()` gives for
    the epoch after (None: stop there), and so on: the DataLoader runs on into the next epoch."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.epoch = 0
        self.base_seed: int | None = None  # None: the workers are fresh, seeded by torch itself
        self.batches: list[Sequence[Any]] = []
        self.follow: Callable[[int], tuple[int | None, list[Sequence[Any]]] | None] | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int | None, int, Any]]]:
        epoch, base_seed, batches = self.epoch, self.base_seed, self.batches
        while True:
            for i, batch in enumerate(batches):
                yield [(epoch, base_seed, i % self.workers, key) for key in batch]
            following = self.follow(epoch) if self.follow is not None else None
            if following is None:
                return
            epoch += 1
            base_seed, batches = following


class _EpochSeededDataset(torch.utils.data.Dataset):
    """The dataset, reseeding a worker at its first item of an epoch as a new worker is seeded.

    As which worker: the key's slot, the batch's place in the epoch modulo the workers, which
    is the worker a new DataLoader gives that batch. The persistent DataLoader deals an
    iteration's batches round the workers in turn, so in an iteration that runs on from the
    epoch before (prefetch), the same batches go to the same worker, but under another id."""

    def __init__(self, dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self._tag: tuple[int, int | None] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, tagged: tuple[int, int | None, int, Any]):
        epoch, base_seed, slot, key = tagged
        if (epoch, base_seed) != self._tag:
            if torch.utils.data.get_worker_info() is not None:  # (no workers: nothing seeded,
                if base_seed is not None:                       # as in espnet2)
                    torch.manual_seed(base_seed + slot)
                worker_init_fn(slot, base_seed=epoch + self.seed)
            self._tag = (epoch, base_seed)
        return self.dataset[key]


def _draw_base_seed() -> int:
    """What a new DataLoader iterator draws from the global torch RNG for its workers."""
    return int(torch.empty((), dtype=torch.int64).random_().item())


def _peek_base_seed() -> int:
    """The seed _draw_base_seed would draw now, the RNG left as it was."""
    state = torch.get_rng_state()
    try:
        return _draw_base_seed()
    finally:
        torch.set_rng_state(state)


class _PersistentLoader:
    """One DataLoader with persistent workers, iterated once an epoch: each epoch a new
    iteration of it, or with `prefetch` the one already running on from the epoch before, when
    the batches and the seed it guessed for this epoch are the ones it gets."""

    def __init__(self, loader: DataLoader, batches: _EpochBatches,
                 epoch_batches: Callable[[int], list[Sequence[Any]]], prefetch: bool) -> None:
        self.loader = loader
        self.batches = batches
        self.epoch_batches = epoch_batches  # an epoch's batches, as espnet2 would build them
        self.prefetch = prefetch
        self.prefetched_epochs = 0  # epochs whose first batches were loaded during the one before
        self.reset_epochs = 0       # later epochs that started the workers' iteration afresh
        self._iterated = False
        self._running: Iterator | None = None   # the DataLoader's iteration, when it may run on
        self._guess: tuple[int, int, list] | None = None  # (epoch, seed, batches) it runs on into
        self._finished = -1  # the last epoch consumed to its end from `_running`

    def __len__(self) -> int:
        return len(self.loader)

    def _follow(self, epoch: int) -> tuple[int, list[Sequence[Any]]] | None:
        """Called by the sampler at the end of `epoch`'s batches: the next epoch's seed and
        batches to load ahead, or None. Only while `epoch` is the one being trained (its seed
        drawn; an epoch shorter than the DataLoader's prefetch would else be run past) and
        no guess is pending: the seed is the one the next epoch would draw if nothing draws
        from the torch RNG in between; `__iter__` checks it."""
        if epoch != self.batches.epoch or self._guess is not None:
            return None
        seed, batches = _peek_base_seed(), list(self.epoch_batches(epoch + 1))
        self._guess = (epoch + 1, seed, batches)
        return seed, batches

    def __iter__(self):
        first = not self._iterated
        self._iterated = True
        # the first epoch: the DataLoader draws the base seed itself (fresh workers)
        base_seed = None if first else _draw_base_seed()
        guess, self._guess = self._guess, None
        wanted = (self.batches.epoch, base_seed, list(self.batches.batches))
        if (guess is not None and self._running is not None and guess == wanted
                and self._finished == self.batches.epoch - 1):
            self.prefetched_epochs += 1
            running = self._running
        else:  # a new iteration; a prefetch in flight is discarded by the DataLoader's reset
            if not first:
                self.reset_epochs += 1
            self.batches.base_seed = base_seed
            self.batches.follow = self._follow if self.prefetch else None
            running = self._running = iter(self.loader)
        return self._take(running, self.batches.epoch, len(self.batches))

    def close(self) -> None:
        """Stops the workers (PersistentSequenceIterFactory.close says why); a later epoch
        would start new ones."""
        iterator, self.loader._iterator = self.loader._iterator, None
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            workers = len(iterator._workers)
            iterator._shutdown_workers()  # torch's own shutdown: tells each worker, joins it
            logging.info(f"stopped {workers} persistent DataLoader worker(s)")
        self._running, self._guess = None, None

    def _take(self, running: Iterator, epoch: int, count: int) -> Iterator:
        for _ in range(count):
            try:
                yield next(running)
            except StopIteration:
                return
        self._finished = epoch


class PersistentSequenceIterFactory(SequenceIterFactory):
    """SequenceIterFactory whose DataLoader workers live for the whole training run."""

    def __init__(self, *args, prefetch_next_epoch: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prefetch_next_epoch = prefetch_next_epoch
        if self.num_workers < 1:
            raise ValueError("persistent DataLoader workers need num_workers >= 1")
        self._batches = _EpochBatches(self.num_workers)
        self._loader: _PersistentLoader | None = None

    @classmethod
    def from_factory(cls, factory: SequenceIterFactory, prefetch_next_epoch: bool = False
                     ) -> "PersistentSequenceIterFactory":
        """The same iterator as `factory` (dataset, batches, seed, workers, collate, pinning)."""
        return cls(factory.dataset, factory.sampler, prefetch_next_epoch=prefetch_next_epoch,
                   num_iters_per_epoch=factory.num_iters_per_epoch, seed=factory.seed,
                   shuffle=factory.shuffle, shuffle_within_batch=factory.shuffle_within_batch,
                   num_workers=factory.num_workers, collate_fn=factory.collate_fn,
                   pin_memory=factory.pin_memory)

    def build_iter(self, epoch: int, shuffle: bool | None = None) -> _PersistentLoader:
        # espnet2's DataLoader for this epoch, never iterated (no worker starts): its batches
        batches = super().build_iter(epoch, shuffle).batch_sampler
        self._batches.epoch = epoch
        self._batches.batches = list(batches)
        if self._loader is None:
            kwargs = {} if self.collate_fn is None else {"collate_fn": self.collate_fn}
            self._loader = _PersistentLoader(DataLoader(
                _EpochSeededDataset(self.dataset, self.seed), batch_sampler=self._batches,
                num_workers=self.num_workers, pin_memory=self.pin_memory,
                persistent_workers=True, **kwargs), self._batches, self._espnet2_batches,
                self.prefetch_next_epoch)
        return self._loader

    def close(self) -> None:
        """Stops the workers now, at the training's end. Why: with pinned memory (a GPU) torch
        makes the process's exit join each persistent worker, waiting up to 5 s
        (MP_STATUS_CHECK_INTERVAL) for one nobody has told to stop, then kills it: the 4
        training and 4 validation workers held stage 4's process 40 s or more past its last
        epoch on an H200 (bench/NOTES.md, round 24)."""
        if self._loader is not None:
            self._loader.close()

    def _espnet2_batches(self, epoch: int) -> list[Sequence[Any]]:
        """espnet2's batches for `epoch`, from a DataLoader it builds and never iterates."""
        return list(super().build_iter(epoch).batch_sampler)
