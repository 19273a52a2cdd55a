"""Where stage 4 stalls between epochs: every thread's Python stack, written when the time from
an epoch's end to the next epoch's start passes `--trace_stalls_after` seconds.

Why: stage 4 end to end on an H200 (bench/NOTES.md, round 16) lost 1.4-2.8 s in three epochs
between espnet2's epoch results and its next epoch, each ending as a background checkpoint write
ended; a profile of training steps does not see that stretch, and the GIL alone does not explain
it (round 17). A watchdog thread waits for the next epoch; past the threshold it writes the
stacks of all threads (the training loop, the checkpoint writer, the loaders') from
`sys._current_frames()`, again every `after` seconds while the stall lasts. It needs the GIL to
do so: when a thread holds the GIL through the whole stall, the dump comes late, and its
`late by` says by how much (itself a finding). Python's `faulthandler` watchdog, which needs no
GIL, crashed the training process (segfault) when it dumped while the threads ran, so it is
not used. Off by default (0).

The file (`stall_traces.txt` in the experiment dir, `stall_traces.rank{N}.txt` under DDP) gets
one line as each epoch ends (its epoch and wall-clock time), and the dumps. After the last
epoch the same goes on until the process exits (`training_ended`): on an H200 the training
process lived 48-51 s after its last line in train.log (rounds 23-24), with nothing to say
where (40 s of it, found later, were the DataLoader workers' exit joins, now avoided:
cvasr.speedups.persistent_loader).
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from pathlib import Path

import torch


def traces_path(output_dir: Path) -> Path:
    """The stall traces of this process: one file a rank under torch.distributed."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return Path(output_dir) / f"stall_traces.rank{dist.get_rank()}.txt"
    return Path(output_dir) / "stall_traces.txt"


def thread_stacks() -> str:
    """Every thread's Python stack, most recent call last, each under its thread's name."""
    names = {t.ident: t.name for t in threading.enumerate()}
    blocks = []
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame))
        blocks.append(f"Thread {names.get(ident, '?')} ({ident}):\n{stack}")
    return "\n".join(blocks)


class StallTracer:
    """A watchdog armed as an epoch ends and disarmed as the next one starts."""

    def __init__(self, path: Path, after: float, last_epoch: int | None = None) -> None:
        if after <= 0:
            raise ValueError(f"trace_stalls_after: {after} is not a positive number of seconds")
        self.path, self.after, self.last_epoch = Path(path), after, last_epoch
        self._interval = after  # between dumps
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - open for the run
        self._cond = threading.Condition()
        self._armed_at: float | None = None  # monotonic time the epoch (or the training) ended
        self._ended = ""      # what ended then, as the dumps' headers say it
        self._awaited = ""    # what has not happened since
        self._next_dump = 0.0  # monotonic time of the next dump, while armed
        self._closed = False
        self.dumps = 0  # dumps of the whole run
        self._thread = threading.Thread(target=self._watch, name="cvasr-stall-tracer",
                                        daemon=True)
        self._thread.start()

    def epoch_ended(self, epoch: int) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        awaited = (f"epoch {epoch + 1} has not started" if epoch != self.last_epoch
                   else "the training goes on after its last epoch")
        with self._cond:
            self._file.write(f"epoch {epoch} ended at {stamp}; stacks follow if "
                             f"{awaited} {self.after:g} s later\n")
            self._ended, self._awaited = f"epoch {epoch} ended", awaited
            self._arm()

    def training_ended(self) -> None:
        """The training loop is done: stacks from now until the process exits, every `after`
        seconds but no more often than once a second (the watchdog is a daemon thread; the
        file stays open until then)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        with self._cond:
            self._interval = max(self.after, 1.0)
            self._file.write(f"the training ended at {stamp}; stacks follow every "
                             f"{self._interval:g} s until the process exits\n")
            self._ended, self._awaited = "the training ended", "the process has not exited"
            self._arm()

    def _arm(self) -> None:
        self._armed_at = time.monotonic()
        self._next_dump = self._armed_at + self._interval
        self._cond.notify()

    def epoch_starts(self) -> None:
        with self._cond:
            self._armed_at = None
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed, self._armed_at = True, None
            self._cond.notify()
        self._thread.join()
        self._file.close()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._armed_at is None:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                if now < self._next_dump:
                    self._cond.wait(self._next_dump - now)  # woken early by epoch_starts, close
                    continue
                self._file.write(f"--- {self._ended} {now - self._armed_at:.3f} s ago and "
                                 f"{self._awaited} (late by {now - self._next_dump:.3f} s):\n"
                                 f"{thread_stacks()}\n")
                self._next_dump = time.monotonic() + self._interval
                self.dumps += 1
