"""Checkpoints written by a process of their own, forced to disk as they are written.

Why: stage 4 wrote `checkpoint.pth` (3.8 GB for XLS-R 300M with Adam) from a background thread
of the training process, and on an H200 the training loop stalled 1.0-2.6 s each time such a
write ended (bench/NOTES.md, rounds 16 and 22). Beside a thread's torch.save to a file, a
Python-bound loop on an H200 machine was held 2.04 s once (bench/checkpoint_gil.py; 30 ms beside
torch.save to memory): torch's file writer keeps the GIL while the write waits on the disk. Here
the training process hands the writer a Snapshot (cvasr.training.snapshot): a GPU buffer as a
CUDA IPC handle, a host buffer as a shared-memory file, so nothing is copied to the host or
serialised on the training side; the writer copies the tensors to its own memory, torch.saves
them under a temporary name, forced to disk as it goes (_SyncedFile), renames the file and
frees the file it replaced a piece at a time (release_file): file-system work that, done at
once, held every process's file-system changes, an unlink in the training loop's between-epoch
work included (round 23). The files load as torch.save of the state would, its tensors on the
host.

The process is started with the run (EpochWriter) and serves it; it exits when the training
process closes the pipe, or dies (the pipe's end then reads EOF), so a kill -9 of training
leaves no writer behind beyond the file it is writing. A failed write raises in the training
process with the writer's traceback; a writer that died leaves the snapshot to be written by
the training process (HandoverError).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.multiprocessing  # noqa: F401 - its reductions: CUDA IPC, shared memory

from cvasr.training.snapshot import Snapshot


class HandoverError(RuntimeError):
    """The writer process could not take a snapshot, or died with it: the snapshot is intact
    and can be written another way (unlike a write that failed, a full disk say)."""


#: how many bytes of a file being written may wait in the page cache (see _SyncedFile)
SYNC_EVERY_BYTES = 256 * 2**20


class _SyncedFile:
    """What torch.save writes to in the writer process: a file whose bytes are forced to disk
    every SYNC_EVERY_BYTES. Why: written through the page cache alone, the whole file goes to
    disk when it is renamed over the old one (ext4 flushes a file renamed over another before
    the rename commits, and a journal commit holds back every process's file-system changes):
    another process's file creation waited 1317 ms for a 2 GiB file so renamed, 696 ms with the
    file forced to disk first (bench/checkpoint_fs.py; the rest was the old file's blocks freed,
    release_file). Forced out as it is written, the file leaves no gigabytes for one commit."""

    def __init__(self, file: Any) -> None:
        self._file, self._unsynced = file, 0

    def write(self, data: Any) -> int:
        written = self._file.write(data)
        self._unsynced += written
        if self._unsynced >= SYNC_EVERY_BYTES:
            self._file.flush()
            os.fdatasync(self._file.fileno())
            self._unsynced = 0
        return written

    def flush(self) -> None:
        self._file.flush()


def release_file(path: Path) -> None:
    """Remove `path`; where that is the file's last name, its blocks freed SYNC_EVERY_BYTES at a
    time first. Why: ext4 frees a file's blocks as its last name goes, in one journal
    transaction, and every process's file-system change waits for it: a rename over a 2 GiB file
    (forced to disk first) held another process's small file work 696 ms, 0.5 ms with the old
    file freed piecewise (bench/checkpoint_fs.py). A file with other names keeps its data (a hard
    link to it may still be read)."""
    try:
        with open(path, "r+b") as file:
            status = os.fstat(file.fileno())
            if status.st_nlink == 1:
                size = status.st_size
                while size > 0:
                    size = max(0, size - SYNC_EVERY_BYTES)
                    os.ftruncate(file.fileno(), size)
    except FileNotFoundError:
        return
    except OSError:  # not ours to write (read-only): removed at once, as before
        pass
    os.unlink(path)


def _into_place(partial: Path, path: Path) -> None:
    """`partial` renamed to `path`; the file it replaces released piecewise (release_file) under a
    name of its own, `{path}.replaced`, which a kill may leave behind (the next write removes
    it)."""
    replaced = Path(f"{os.fspath(path)}.replaced")
    release_file(replaced)
    try:
        os.link(path, replaced)  # the old file keeps a name through the rename
    except OSError:  # no old file, or a file system without hard links: a plain rename
        pass
    os.replace(partial, path)
    release_file(replaced)


def atomic_save(save: Callable[..., None], obj: Any, path: Path) -> None:
    """`save(obj, path)` under a temporary name, then renamed into place: a kill at any moment
    leaves the previous file whole."""
    partial = Path(f"{os.fspath(path)}.partial")
    save(obj, partial)
    _into_place(partial, path)


def _torch_save_synced(obj: Any, path: Path) -> None:
    """torch.save(obj, path) through _SyncedFile, the whole file on disk when it returns."""
    with open(path, "wb") as file:
        torch.save(obj, _SyncedFile(file))
        file.flush()
        os.fsync(file.fileno())


def save_synced(obj: Any, path: Path) -> None:
    """torch.save(obj) to `path` by atomic_save, the file on disk before the rename (a crash
    after the rename cannot leave an empty checkpoint either)."""
    atomic_save(_torch_save_synced, obj, path)


def _serve(conn: Any) -> None:
    """The writer process: (skeleton, buffers, path) in, ("ok", None) or ("error", traceback)
    out, until None or EOF."""
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the training process is gone
            return
        if message is None:
            return
        skeleton, buffers, path = message
        del message
        try:
            state = Snapshot(skeleton, buffers).materialise()
            del buffers  # the training process may reuse that memory now
            save_synced(state, Path(path))
            del state
            reply: tuple[str, str | None] = ("ok", None)
        except BaseException:  # noqa: BLE001 - sent to the training process, which raises it
            reply = ("error", traceback.format_exc())
        try:
            conn.send(reply)
        except (BrokenPipeError, EOFError, OSError):
            return


class WriterProcess:
    """The training side: `save(snapshot, path)` returns when the file is in place. One caller
    at a time (the EpochWriter's thread).

    The process is `python -m cvasr.training.writer_process`, not a multiprocessing spawn: that
    would import the training's main module again (espnet2 and all, with its console of import
    messages, before the first checkpoint can be written); this imports torch and this module.
    It gets its end of a multiprocessing pipe and this process's authkey (with which it fetches
    the shared-memory files of host tensors from this process), so torch.multiprocessing's
    sharing works as it does between multiprocessing's own processes.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._conn: Any = None

    def start(self) -> None:
        """Start the process (returns at once; it comes up while training goes on)."""
        if self._process is not None:
            return
        parent, child = multiprocessing.Pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "cvasr.training.writer_process", str(child.fileno())],
            stdin=subprocess.PIPE, pass_fds=[child.fileno()], env=env)
        child.close()
        self._process.stdin.write(bytes(multiprocessing.current_process().authkey))
        self._process.stdin.close()
        self._conn = parent
        logging.info(f"checkpoint writer process started (pid {self._process.pid})")

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def save(self, snapshot: Snapshot, path: Path) -> None:
        """`snapshot` written to `path`; HandoverError where it could not be handed over
        (shared memory may be full, the process may be gone) or the process died with it,
        RuntimeError where the write failed."""
        try:
            self.start()
            self._conn.send((snapshot.skeleton, snapshot.buffers, os.fspath(path)))
        except Exception as e:  # noqa: BLE001 - whatever stopped the handover, named
            raise HandoverError(f"{path} not handed to the checkpoint writer process: "
                                f"{type(e).__name__}: {e}") from e
        try:
            status, detail = self._conn.recv()
        except (EOFError, OSError):  # its end closed, or reset
            code = self._process.wait()
            self._process = self._conn = None
            raise HandoverError(f"the checkpoint writer process died writing {path} "
                                f"(exit code {code})") from None
        if torch.cuda.is_initialized():  # the shared buffers the writer has let go of, freed
            torch.cuda.ipc_collect()     # (else torch warns of them as this process exits)
        if status != "ok":
            raise RuntimeError(f"the checkpoint writer process failed to write {path}:\n{detail}")

    def close(self) -> int | None:
        """Stop the process once its writes are done; its exit code."""
        if self._process is None:
            return None
        try:
            self._conn.send(None)
        except OSError:
            pass
        self._conn.close()
        try:
            code = self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self._process = self._conn = None
        if torch.cuda.is_initialized():
            torch.cuda.ipc_collect()
        return code


def main(argv: list[str] | None = None) -> None:
    """The writer process: argv[0] is the file descriptor of its pipe end, stdin the authkey."""
    (fd,) = sys.argv[1:] if argv is None else argv
    multiprocessing.current_process().authkey = sys.stdin.buffer.read()
    _serve(multiprocessing.connection.Connection(int(fd)))


if __name__ == "__main__":
    main()
