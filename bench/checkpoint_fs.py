"""How long a checkpoint write holds back another process's file-system changes (CPU, any disk).

Why: with checkpoints written by a process of their own (cvasr.training.writer_process), stage 4
on an H200 still stalled about a second once in 50 epochs, its training thread in `os.unlink`
until the writer's file was renamed into place (bench/NOTES.md, round 23). ext4 frees a file's
blocks as its last name goes, in one journal transaction, and every change to the file system
waits for it. This writes a state of `--gib` GiB over an earlier one, in a child process, while
this process creates, links and removes small files (espnet2's between-epoch file work) and times
each, for two ways of putting the file in place:

- `save, rename`: torch.save under a temporary name, os.replace over the old (as the writer
  thread did before round 23);
- `save, fsync, rename`: the same with the file forced to disk before the rename;
- `old file released piecewise`: what the writer process does (save_synced: the same, the old
  file kept under a name of its own through the rename and then truncated a piece at a time).

Prints a table and saves JSON: the longest and 99th-percentile file operation while each write
runs, and the write's seconds.
  python bench/checkpoint_fs.py --gib 2 --out bench/results/checkpoint_fs.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cvasr.training.writer_process import save_synced  # noqa: E402
from report import print_table, save  # noqa: E402

WAYS = ("save, rename (before round 23)", "save, fsync, rename", "old file released piecewise")


def write(way: str, gib: float, path: Path) -> None:
    """The child: builds the state, says so on stdout, writes it one way."""
    state = {f"param{i}": torch.randn(1024, 1024) for i in range(max(1, int(gib * 256)))}
    print("ready", flush=True)
    sys.stdin.readline()
    if way == WAYS[2]:
        save_synced(state, path)
        return
    partial = Path(f"{path}.partial")
    with open(partial, "wb") as file:
        torch.save(state, file)
        file.flush()
        if way == WAYS[1]:
            os.fsync(file.fileno())
    os.replace(partial, path)


def timed_file_work(child: subprocess.Popen, work: Path) -> dict:
    """espnet2's kind of file work every 10 ms until the child exits: the times of each round."""
    times, i = [], 0
    start = time.perf_counter()
    while child.poll() is None:
        i += 1
        t = time.perf_counter()
        (work / f"small{i}").write_bytes(b"x")
        latest = work / "latest"
        if latest.is_symlink():
            latest.unlink()
        latest.symlink_to(f"small{i}")
        (work / f"small{i - 1}").unlink(missing_ok=True)
        times.append(time.perf_counter() - t)
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    times.sort()
    return {"write_s": round(elapsed, 2), "file_rounds": len(times),
            "longest_ms": round(1000 * times[-1], 2),
            "p99_ms": round(1000 * times[int(0.99 * (len(times) - 1))], 2)}


def run_child(way: str, gib: float, path: Path, work: Path | None) -> dict | None:
    child = subprocess.Popen([sys.executable, __file__, "--child", way, "--gib", str(gib),
                              "--path", str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    child.stdin.write("go\n")
    child.stdin.flush()
    result = timed_file_work(child, work) if work is not None else None
    if child.wait() != 0:
        raise SystemExit(f"the writer ({way}) failed")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", choices=WAYS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        write(args.child, args.gib, args.path)
        return 0
    rows = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        path = work / "checkpoint.pth"
        for way in WAYS:
            run_child(WAYS[1], args.gib, path, None)  # the earlier file it replaces
            os.sync()
            rows[way] = run_child(way, args.gib, path, work)
            os.sync()
    fs = subprocess.run(["df", "--output=fstype", str(args.dir)], capture_output=True,
                        text=True, check=False).stdout.split()[-1:]
    print(f"{args.gib} GiB over a file as large, in {args.dir} ({fs[0] if fs else '?'}); "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}")
    print_table("how the file goes into place", [("write s", "write_s"),
                                                 ("longest ms", "longest_ms"),
                                                 ("p99 ms", "p99_ms")], rows)
    save(args.out, {"benchmark": "checkpoint_fs", "gib": args.gib,
                    "filesystem": fs[0] if fs else None, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
