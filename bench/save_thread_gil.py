#!/usr/bin/env python3
"""Does a checkpoint written by a background thread slow the training thread's Python? The
question behind stage 4's slow epochs while a checkpoint is written (bench/NOTES.md, round 14):
the training loop's Python (CUDA Graph Trees' checks among it) shares the GIL with the writer
thread. Here the main thread runs a pure-Python loop (a walk over 600 objects, like those
checks) alone and while another thread runs `torch.save` of a checkpoint-like state of host
tensors (400 tensors, 1.2 GB by default), alternately, and reports the loop's rate each way.

    python3 bench/save_thread_gil.py --out bench/results/save_thread_gil.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import torch


def loop_rate(seconds: float) -> float:
    """Walks over 600 objects a second, for `seconds`."""
    refs = [object() for _ in range(600)]
    walks, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for ref in refs:
            if ref is None:
                break
        walks += 1
    return walks / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tensors", type=int, default=400)
    parser.add_argument("--elements", type=int, default=750_000, help="float32 a tensor")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    state = {f"p{i}": torch.randn(args.elements) for i in range(args.tensors)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.pt"
        for trial in range(args.trials):
            alone = loop_rate(args.seconds)
            writer = threading.Thread(target=torch.save, args=(state, path))
            start = time.perf_counter()
            writer.start()
            beside = loop_rate(args.seconds)
            writer.join()
            rows.append({"trial": trial, "alone_per_s": round(alone), "beside_save_per_s":
                         round(beside), "ratio": round(beside / alone, 3),
                         "save_s": round(time.perf_counter() - start, 2)})
    gb = args.tensors * args.elements * 4 / 1e9
    print(f"torch.save of {args.tensors} tensors, {gb:.1f} GB, in a thread; a Python loop beside it")
    print("| trial | loop alone /s | loop beside the save /s | ratio | save s |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['trial']} | {r['alone_per_s']} | {r['beside_save_per_s']} | {r['ratio']} "
              f"| {r['save_s']} |")
    if args.out is not None:
        args.out.write_text(json.dumps({"benchmark": "save_thread_gil", "torch": torch.__version__,
                                        "state_gb": round(gb, 2), "rows": rows}, indent=1) + "\n")
        print(f"saved {args.out}")


if __name__ == "__main__":
    main()
