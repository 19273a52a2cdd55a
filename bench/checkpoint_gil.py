"""How much a checkpoint written by a background thread holds back the training thread (CPU).

Why: stage 4 writes `checkpoint.pth` from a background thread (cvasr.training.checkpoints), and
round 16's end-to-end run on an H200 showed the training loop stalled 1.4-2.8 s an epoch when a
3.8 GB write ended (bench/NOTES.md). Threads share Python's GIL: this measures, on the CPU, how
much of a Python-bound loop's speed is left while another thread writes a state of
`--gib` GiB in one of three ways, against the loop alone in the same run:

- `torch.save(path)`: what the writer does now;
- `torch.save(BytesIO)`: serialising into memory only;
- `file.write(buffer)`: writing those bytes with Python's file object (which releases the GIL
  during the system call);
- `writer process`: what the writer does since round 23 (cvasr.training.writer_process): the
  thread copies the state into one buffer (cvasr.training.snapshot) and hands it to a process
  of its own, which torch.saves it; the process is started before the loop is timed, as a
  training run's is at its first checkpoint.

With `--device cuda` the state lives on the GPU and the loop launches small GPU ops, as the
training loop's CPU side does; each write then copies to the host on a stream of its own, as
the stage-4 writer does (cvasr.training.checkpoints).

Prints a table and saves JSON: iterations a second of the loop (and its share of the loop alone),
its longest and 99th-percentile iteration while each write runs, and the write's seconds.
  python bench/checkpoint_gil.py --gib 2 --out bench/results/checkpoint_gil.json
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from cvasr.training.checkpoints import _host_copies_off_the_training_stream, _snapshot_taken
from cvasr.training.snapshot import Snapshot
from cvasr.training.writer_process import WriterProcess
from report import print_table, save


def loop_iteration(x: torch.Tensor) -> None:
    """A Python-bound stand-in for the training loop's CPU side: many small ops."""
    for _ in range(100):
        x @ x
    if x.is_cuda:  # the GPU's queue stays short: the loop measures the CPU side
        torch.cuda.synchronize()


def loop_alone(seconds: float, device: str) -> float:
    x = torch.randn(64, 64, device=device)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        loop_iteration(x)
        n += 1
    return n / (time.perf_counter() - start)


def loop_beside(write: Callable[[], None], device: str) -> dict:
    """The loop's iterations while `write` runs in a thread."""
    done = threading.Event()
    taken = _snapshot_taken()  # None on the CPU

    def writer() -> None:
        try:
            with _host_copies_off_the_training_stream(taken):
                write()
        finally:
            done.set()

    x = torch.randn(64, 64, device=device)
    times = []
    thread = threading.Thread(target=writer)
    start = time.perf_counter()
    thread.start()
    while not done.is_set():
        t = time.perf_counter()
        loop_iteration(x)
        times.append(time.perf_counter() - t)
    thread.join()
    elapsed = time.perf_counter() - start
    times.sort()
    return {"write_s": round(elapsed, 2), "loop_it_per_s": round(len(times) / elapsed, 1),
            "longest_iteration_ms": round(1000 * times[-1], 1),
            "p99_iteration_ms": round(1000 * times[int(0.99 * (len(times) - 1))], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="size of the state written")
    parser.add_argument("--device", default="cpu", help="where the state and the loop live")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    n = max(1, int(args.gib * 2**30 / (4 * 2**20)))  # 4 MiB fp32 tensors, as a model's
    state = {f"param{i}": torch.randn(1024, 1024, device=args.device) for i in range(n)}
    path = args.dir / "checkpoint_gil_probe.pth"
    held: dict[str, io.BytesIO] = {}

    def save_path() -> None:
        torch.save(state, path)

    def save_memory() -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        held["buffer"] = buffer

    def write_buffer() -> None:
        with open(path, "wb") as f:
            f.write(held["buffer"].getbuffer())

    process = WriterProcess()
    # started and (on a GPU) its CUDA context up, as in a run after its first checkpoint
    process.save(Snapshot.take({"warm-up": torch.zeros(1, device=args.device)}), path)

    def save_process() -> None:
        process.save(Snapshot.take(state), path)

    alone = round(loop_alone(3.0, args.device), 1)  # as the JSON has it: shares follow from it
    rows = {}
    for name, write in (("torch.save(path)", save_path), ("torch.save(BytesIO)", save_memory),
                        ("file.write(buffer)", write_buffer), ("writer process", save_process)):
        rows[name] = loop_beside(write, args.device)
        rows[name]["loop_share"] = round(rows[name]["loop_it_per_s"] / alone, 3)
        os.sync()
    written = torch.load(path, map_location="cpu")  # the writer process's file, the last one
    same = written.keys() == state.keys() and all(
        torch.equal(written[k], v.cpu()) for k, v in state.items())
    rows["writer process"]["file_equals_state"] = same
    process.close()
    path.unlink(missing_ok=True)

    print(f"the writer process's file equals the state: {same}")
    print(f"{len(state)} tensors, {args.gib} GiB on {args.device}; the loop alone: {alone:.0f} it/s "
          f"({os.cpu_count()} CPUs, torch {torch.__version__})")
    print_table("while another thread runs", [
        ("write s", "write_s"), ("loop it/s", "loop_it_per_s"), ("share", "loop_share"),
        ("longest ms", "longest_iteration_ms"), ("p99 ms", "p99_iteration_ms")], rows)
    save(args.out, {"benchmark": "checkpoint_gil", "device": args.device, "gib": args.gib,
                    "tensors": len(state), "loop_alone_it_per_s": alone, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
