"""What stage 4 writes between epochs, and when.

espnet2's Trainer ends every epoch by writing `checkpoint.pth` (model, optimizer, schedulers,
scaler: 3.8 GB for XLS-R 300M with Adam), an `{epoch}epoch.pth` model file, and 17 matplotlib
plots. With XLS-R on an H200, where an epoch of the demo corpus trains in under 2 s, that was 83%
of stage 4's wall clock (issue 17). The seed's Trainer saves every 500 steps. Here, with
espnet2's loop unchanged (its calls are routed through `EpochWriter`):

- `checkpoint.pth` (with the RNG states, for exact resumes) is written when
  `checkpoint_every_minutes` have passed since the last one, or every `checkpoint_every_epochs`
  epochs, and always after the last epoch (both 0: every epoch, espnet2's way). The state is
  copied on its own device at the epoch's end (cvasr.training.snapshot: a few device-to-device
  copies, milliseconds) and written under a temporary name, then renamed: training goes on
  meanwhile, and a kill at any moment leaves the previous checkpoint whole. With
  `background` a thread of this process hands the copy to a writer process and waits for it
  (cvasr.training.writer_process says why: a thread's torch.save and the file's rename held the
  training loop 1-2.6 s as each 3.8 GB write ended, rounds 16, 22 and 23); where no process can
  take it, the thread writes it itself. A GPU's tensors reach the host on a stream of their own
  (`_host_copies_off_the_training_stream`): on the training's stream each copy held back the
  training kernels queued after it (bench/NOTES.md, round 14).
- `{epoch}epoch.pth` model files exist for the averaging of the n best at the end: an epoch's
  model is kept in memory (on its device) while it is among the n best by the best-model
  criterion, or is the latest, and goes to disk with the next checkpoint. It is written into
  `checkpoint_models/` (before checkpoint.pth, so a checkpoint on disk always has the n best its
  reporter names, even after espnet2 has deleted an epoch file that left the n best since) and
  hard-linked as `{epoch}epoch.pth`, where espnet2 reads and deletes it; a resumed run links
  `checkpoint_models/` back. Between checkpoints `latest.pth` may point at a file not yet
  written; `checkpoint.pth` is what resumes.
- plots are drawn every `plot_every_epochs` epochs (0: once, at the end).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from cvasr.training.snapshot import Snapshot
from cvasr.training.validation import has_validated, sort_validated_epochs
from cvasr.training.writer_process import (HandoverError, WriterProcess, atomic_save,
                                           release_file)

EPOCH_FILE = re.compile(r"(\d+)epoch\.pth")
CHECKPOINT = "checkpoint.pth"
#: where the epoch models of the checkpoint on disk live (espnet2 does not look there)
CHECKPOINT_MODELS = "checkpoint_models"


def _snapshot_taken() -> tuple[torch.cuda.Event, int] | None:
    """Where the snapshots' device copies end on the training's stream: an event recorded there
    now, and its device; None while CUDA is not in use (CPU training)."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    event = torch.cuda.Event()
    event.record()
    return event, torch.cuda.current_device()


@contextlib.contextmanager
def _host_copies_off_the_training_stream(taken: tuple[torch.cuda.Event, int] | None
                                         ) -> Iterator[None]:
    """torch.save's copies of GPU tensors to the host, in this block, on a stream of their own
    that first waits for the snapshot (`taken`): not queued between the training's kernels. Each
    copy to pageable memory returns once done, so the snapshot's memory is free to reuse when
    the block ends."""
    if taken is None:
        yield
        return
    event, device = taken
    with torch.cuda.device(device):
        stream = torch.cuda.Stream()
        stream.wait_event(event)
        with torch.cuda.stream(stream):
            yield


def _link_or_copy(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (a copy where the file system has no hard links)."""
    partial = Path(f"{os.fspath(target)}.partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:
        shutil.copyfile(source, partial)
    os.replace(partial, target)


def nbest_epochs(reporter_state: dict, criteria: list, keep: int) -> set[int]:
    """The epochs espnet2 keeps: the union of the `keep` best of each criterion it can rank."""
    from espnet2.train.reporter import Reporter

    reporter = Reporter()
    reporter.load_state_dict(reporter_state)
    ranked = [sort_validated_epochs(reporter, ph, key, mode)[:keep]
              for ph, key, mode in criteria if has_validated(reporter, ph, key)]
    return {epoch for best in ranked for epoch, _ in best}


class EpochWriter:
    """One training run's between-epoch writes (see the module docstring). Not thread-safe: the
    training loop calls it; its own thread only writes files."""

    def __init__(self, output_dir: Path, max_epoch: int, criteria: list, keep_nbest: int,
                 every_minutes: float = 0.0, every_epochs: int = 0,
                 background: bool = True, save: Callable[..., None] = torch.save,
                 rng_states: Callable[[], dict] | None = None, rng_key: str = "rng") -> None:
        self.output_dir = Path(output_dir)
        self.max_epoch, self.criteria, self.keep_nbest = max_epoch, criteria, keep_nbest
        self.every_minutes, self.every_epochs = every_minutes, every_epochs
        self._save_fn, self._rng_states, self._rng_key = save, rng_states, rng_key
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cvasr-checkpoint") \
            if background else None
        # the writer process serves torch.save only; another `save` (tests) runs in the thread
        self._process = WriterProcess() if background and save is torch.save else None
        if self._process is not None:
            try:
                self._process.start()  # up by the first checkpoint
            except OSError as e:
                logging.warning(f"checkpoints: no writer process ({e}); this process writes "
                                "them, which can hold training back while each is written")
                self._process = None
        self._pending: list[Future] = []
        self._last_checkpoint = time.monotonic()
        self._models: dict[int, Snapshot] = {}  # epoch -> model state, on its device
        self._kept_dir = self.output_dir / CHECKPOINT_MODELS
        self._on_disk: set[int] = {int(m.group(1)) for p in self._kept_dir.glob("*epoch.pth")
                                   if (m := EPOCH_FILE.fullmatch(p.name))} \
            if self._kept_dir.is_dir() else set()
        self._wanted: set[int] = set()
        self._lock = threading.Lock()
        self._due: Snapshot | None = None  # this epoch's checkpoint, when one is due
        self.checkpoints_written = 0

    def restore(self) -> list[int]:
        """Before a resumed run: the checkpoint's epoch models back as `{epoch}epoch.pth`."""
        restored = []
        for epoch in sorted(self._on_disk):
            target = self.output_dir / f"{epoch}epoch.pth"
            if not target.exists():
                _link_or_copy(self._kept_dir / target.name, target)
                restored.append(epoch)
        return restored

    # ---- the decisions
    def checkpoint_due(self, epoch: int) -> bool:
        if epoch >= self.max_epoch:
            return True
        if self.every_minutes <= 0 and self.every_epochs <= 0:
            return True
        if self.every_epochs > 0 and epoch % self.every_epochs == 0:
            return True
        return (self.every_minutes > 0
                and time.monotonic() - self._last_checkpoint >= 60.0 * self.every_minutes)

    # ---- what espnet2's loop calls (through torch.save)
    def on_checkpoint(self, state: dict) -> None:
        """espnet2 saving checkpoint.pth: remember the reporter; snapshot the state if due."""
        reporter = state["reporter"]
        epoch = int(reporter["epoch"])
        with self._lock:
            self._wanted = nbest_epochs(reporter, self.criteria, self.keep_nbest) | {epoch}
        if self.checkpoint_due(epoch):
            if self._rng_states is not None:
                state = {**state, self._rng_key: self._rng_states()}
            self._due = Snapshot.take(state)
            self._last_checkpoint = time.monotonic()

    def on_epoch_model(self, epoch: int, model_state: dict) -> None:
        """espnet2 saving {epoch}epoch.pth (right after checkpoint.pth): keep it in memory while
        wanted; with a checkpoint due, write the wanted models and then the checkpoint."""
        with self._lock:
            wanted = set(self._wanted)
        self._models[epoch] = Snapshot.take(model_state)
        for e in [e for e in self._models if e not in wanted]:
            del self._models[e]
        if self._due is not None:
            checkpoint, self._due = self._due, None
            models = {e: s for e, s in self._models.items() if e not in self._on_disk}
            keep = set(self._models) | (self._on_disk & wanted)
            self._on_disk = keep
            self._submit(self._write, models, checkpoint, keep)

    def flush(self) -> None:
        """Every wanted epoch model on disk, and every write finished (before averaging reads
        them, and at the end of the run)."""
        models = {e: s for e, s in self._models.items() if e not in self._on_disk}
        if models:
            self._on_disk |= set(models)
            self._submit(self._write, models, None, None)
        self.wait()

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()  # a failed write raises here, in the training process

    def close(self) -> None:
        self.wait()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        # the epoch models were shared with the writer process: let them go before it stops
        # (torch warns at exit of shared CUDA memory still held)
        self._models.clear()
        self._due = None
        if self._process is not None:
            self._process.close()

    # ---- the writing (in the background thread when there is one)
    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        """fn(*args, taken) in the background thread (here without one); `taken` marks the end
        of the snapshots' device copies so far (_snapshot_taken)."""
        taken = _snapshot_taken()
        if self._pool is None:
            fn(*args, taken)
            return
        self._pending = [f for f in self._pending if not f.done() or f.exception()]
        self._pending.append(self._pool.submit(fn, *args, taken))

    def _write(self, models: dict[int, Snapshot], checkpoint: Snapshot | None,
               keep: set[int] | None, taken: tuple[torch.cuda.Event, int] | None) -> None:
        """The new epoch models into checkpoint_models/ (linked where espnet2 reads them), then
        the checkpoint, then checkpoint_models/ pruned to the n best the checkpoint names."""
        with _host_copies_off_the_training_stream(taken):
            self._write_files(models, checkpoint, keep)

    def _save(self, snapshot: Snapshot, path: Path) -> None:
        """One file: by the writer process where there is one, else here."""
        if self._process is not None:
            try:
                self._process.save(snapshot, path)
                return
            except HandoverError as e:
                logging.warning(f"{e}; this process writes the checkpoints from now on, which "
                                "can hold training back while each is written")
                self._process = None
        atomic_save(self._save_fn, snapshot.materialise(), path)

    def _write_files(self, models: dict[int, Snapshot], checkpoint: Snapshot | None,
                     keep: set[int] | None) -> None:
        start = time.perf_counter()
        self._kept_dir.mkdir(parents=True, exist_ok=True)
        for epoch, state in sorted(models.items()):
            kept = self._kept_dir / f"{epoch}epoch.pth"
            self._save(state, kept)
            with self._lock:
                wanted = epoch in self._wanted
            if wanted:  # else it left the n best while being written: espnet2 is done with it
                _link_or_copy(kept, self.output_dir / kept.name)
        if checkpoint is not None:
            self._save(checkpoint, self.output_dir / CHECKPOINT)
            self.checkpoints_written += 1
        if keep is not None:
            for path in self._kept_dir.glob("*epoch.pth"):
                m = EPOCH_FILE.fullmatch(path.name)
                if m and int(m.group(1)) not in keep:
                    release_file(path)
        logging.info(f"wrote {len(models)} epoch model(s)"
                     + (f" and {CHECKPOINT} (epoch {checkpoint.skeleton['reporter']['epoch']})"
                        if checkpoint is not None else "")
                     + f" in {time.perf_counter() - start:.1f} s")
