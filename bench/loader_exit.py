"""How long a training process takes to exit with its persistent DataLoader workers alive.

Why: on an H200, stage 4's training process lived 48-50 s after its last line in train.log
(bench/NOTES.md, round 24). With pinned memory (training on a GPU) and persistent workers,
torch registers an atexit handler a worker that joins it with a 5 s timeout
(MP_STATUS_CHECK_INTERVAL) and then kills it; a persistent worker waits for work until told to
stop, so each costs the whole 5 s. Stage 4 keeps 4 training and 4 validation workers. Each row
runs a child process that iterates a PersistentSequenceIterFactory (espnet2's batches, as stage
4 does) for two epochs, then exits, either leaving its workers alive or closing the factory
first (what stage 4 does since round 24), and times the child's exit from its last epoch.

Where there is no accelerator torch pins nothing and registers no such handler; the child then
registers the same handler itself (`pinned: emulated` in the output), so the CPU measures the
mechanism the GPU has.
  python bench/loader_exit.py --workers 4 --factories 2 --out bench/results/loader_exit.json
"""

from __future__ import annotations

import argparse
import atexit
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cvasr.speedups.persistent_loader import PersistentSequenceIterFactory  # noqa: E402
from report import print_table, save  # noqa: E402

WAYS = ("workers left alive (before round 24)", "factories closed first (stage 4 now)")


class Clips(torch.utils.data.Dataset):
    """A second of 16 kHz noise a key."""

    def __getitem__(self, key: str) -> tuple[str, dict]:
        return key, {"speech": torch.randn(16000).numpy()}

    def __len__(self) -> int:
        return 64


def collate(items: list) -> tuple[list, dict]:
    return [k for k, _ in items], {"speech": torch.stack([torch.from_numpy(d["speech"])
                                                          for _, d in items])}


def child(way: str, workers: int, factories: int) -> None:
    """Iterates `factories` persistent factories for two epochs, then prints how many workers
    are alive and the time, and exits."""
    batches = [[f"u{i}", f"u{i + 1}"] for i in range(0, 16, 2)]
    pinned = torch.accelerator.is_available()
    built = [PersistentSequenceIterFactory(Clips(), batches, num_workers=workers,
                                           collate_fn=collate, pin_memory=pinned)
             for _ in range(factories)]
    for epoch in (1, 2):
        for factory in built:
            for _ in factory.build_iter(epoch):
                pass
    processes = [w for factory in built for w in factory._loader.loader._iterator._workers]
    if not pinned:  # what torch registers for persistent workers with pinned memory
        from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter
        for worker in processes:
            atexit.register(_MultiProcessingDataLoaderIter._clean_up_worker, worker)
    if way == WAYS[1]:
        for factory in built:
            factory.close()
    alive = sum(w.is_alive() for w in processes)
    print(f"{'real' if pinned else 'emulated'} {alive} {time.time():.6f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4, help="workers a factory")
    parser.add_argument("--factories", type=int, default=2, help="training's and validation's")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", choices=WAYS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workers, args.factories)
        return 0
    rows = {}
    for way in WAYS:
        run = subprocess.run([sys.executable, __file__, "--child", way, "--workers",
                              str(args.workers), "--factories", str(args.factories)],
                             capture_output=True, text=True, check=True)
        ended = time.time()
        pinned, alive, stamp = run.stdout.split()[-3:]
        rows[way] = {"exit_s": round(ended - float(stamp), 2), "pinned": pinned,
                     "workers_alive_at_exit": int(alive)}
    print(f"{args.factories} persistent factories x {args.workers} workers; pinned memory "
          f"{rows[WAYS[0]]['pinned']}; {os.cpu_count()} CPUs, torch {torch.__version__}")
    print_table("at the exit", [("workers alive", "workers_alive_at_exit"),
                                ("exit s", "exit_s")], rows)
    save(args.out, {"benchmark": "loader_exit", "workers": args.workers,
                    "factories": args.factories, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
