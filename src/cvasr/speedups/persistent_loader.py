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
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from espnet2.iterators.sequence_iter_factory import SequenceIterFactory, worker_init_fn
from torch.utils.data import DataLoader


class _EpochBatches:
    """A batch sampler whose batches are replaced every epoch; keys tagged with the epoch."""

    def __init__(self) -> None:
        self.epoch = 0
        self.base_seed: int | None = None  # None: the workers are fresh, seeded by torch itself
        self.batches: list[Sequence[Any]] = []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int | None, Any]]]:
        tag = (self.epoch, self.base_seed)
        return iter([[(*tag, key) for key in batch] for batch in self.batches])


class _EpochSeededDataset(torch.utils.data.Dataset):
    """The dataset, reseeding a worker at its first item of an epoch as a new worker is seeded."""

    def __init__(self, dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, tagged: tuple[int, int | None, Any]):
        epoch, base_seed, key = tagged
        if epoch != self._epoch:
            info = torch.utils.data.get_worker_info()
            if info is not None:  # (without workers nothing is seeded, as in espnet2)
                if base_seed is not None:
                    torch.manual_seed(base_seed + info.id)
                worker_init_fn(info.id, base_seed=epoch + self.seed)
            self._epoch = epoch
        return self.dataset[key]


class _PersistentLoader:
    """One DataLoader with persistent workers, iterated once an epoch."""

    def __init__(self, loader: DataLoader, batches: _EpochBatches) -> None:
        self.loader = loader
        self.batches = batches
        self._iterated = False

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if not self._iterated:  # first epoch: the DataLoader draws the base seed itself
            self.batches.base_seed = None
            self._iterated = True
        else:  # what a new DataLoader iterator would draw from the global torch RNG
            self.batches.base_seed = int(torch.empty((), dtype=torch.int64).random_().item())
        return iter(self.loader)


class PersistentSequenceIterFactory(SequenceIterFactory):
    """SequenceIterFactory whose DataLoader workers live for the whole training run."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.num_workers < 1:
            raise ValueError("persistent DataLoader workers need num_workers >= 1")
        self._batches = _EpochBatches()
        self._loader: _PersistentLoader | None = None

    @classmethod
    def from_factory(cls, factory: SequenceIterFactory) -> "PersistentSequenceIterFactory":
        """The same iterator as `factory` (dataset, batches, seed, workers, collate, pinning)."""
        return cls(factory.dataset, factory.sampler,
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
                persistent_workers=True, **kwargs), self._batches)
        return self._loader
