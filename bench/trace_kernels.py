#!/usr/bin/env python3
"""The kernels of a profiler Chrome trace (`*.trace.json.gz`, as cvasr.training.profiling and
bench/train_throughput.py --profile write them) whose names contain a pattern: calls, mean
microseconds and the commonest launch grids. Why: which cuDNN algorithm ran, and on how many
thread blocks, shows only in the kernels' names and grids (bench/NOTES.md, round 11).

    python3 bench/trace_kernels.py TRACE --match fprop dgrad wgrad
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
from pathlib import Path


def kernel_summary(trace: dict, pattern: str) -> dict:
    """Kernels whose name contains `pattern`: calls, mean and total microseconds, top grids."""
    kernels = [e for e in trace["traceEvents"]
               if e.get("cat") == "kernel" and pattern in e.get("name", "")]
    total = sum(e["dur"] for e in kernels)
    grids = collections.Counter(str(e.get("args", {}).get("grid")) for e in kernels)
    return {"calls": len(kernels), "total_us": round(total, 1),
            "mean_us": round(total / len(kernels), 1) if kernels else None,
            "grids": grids.most_common(4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("--match", nargs="+", required=True)
    args = parser.parse_args()
    with gzip.open(args.trace, "rt") as f:
        trace = json.load(f)
    everything = kernel_summary(trace, "")
    print(f"{args.trace}: {everything['calls']} kernels, {everything['total_us'] / 1000:.1f} ms")
    for pattern in args.match:
        row = kernel_summary(trace, pattern)
        print(f"{pattern:<12} calls {row['calls']:4d}  mean {row['mean_us']} us  "
              f"total {row['total_us'] / 1000:.1f} ms  grids {row['grids']}")


if __name__ == "__main__":
    main()
