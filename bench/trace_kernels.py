#!/usr/bin/env python3
"""The kernels of a profiler Chrome trace (`*.trace.json.gz`, as cvasr.training.profiling and
bench/train_throughput.py --profile write them) whose names contain a pattern: calls, mean
microseconds, the commonest launch grids, and how long the GPU was busy with them. Why: which
cuDNN algorithm ran, and on how many thread blocks, shows only in the kernels' names and grids
(bench/NOTES.md, round 11); and kernels on several streams overlap, so their summed durations
overstate the GPU time they take (cuDNN runs the positional convolution's 16 per-group kernels
on 8 side streams at once: round 12).

    python3 bench/trace_kernels.py TRACE --match fprop dgrad wgrad
    python3 bench/trace_kernels.py TRACE --classes   # every kernel by class, per profiled step
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
from pathlib import Path


def busy_us(kernels: list[dict]) -> float:
    """Microseconds in which at least one of the kernels ran: the union of their intervals."""
    busy, end = 0.0, float("-inf")
    for start, stop in sorted((e["ts"], e["ts"] + e["dur"]) for e in kernels):
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy


# kernel classes of the XLS-R step, by name fragments; the first class a kernel's name matches
CLASSES = {
    "attention (cuDNN flash)": ("sdpa", "flash", "fmha", "cudnn::fusion"),
    "GEMMs": ("nvjet", "gemm"),
    "positional conv (cuDNN)": ("s16816fprop", "s16816dgrad", "wgrad", "nchwToNhwc", "nhwcToNchw",
                                "weight_norm"),
    "optimizer (fused Adam, foreach)": ("multi_tensor_apply",),
    "inductor's fused kernels": ("triton_",),
    "reductions (aten)": ("reduce_kernel",),
    "CTC loss": ("ctc_loss",),
}


def kernel_class(name: str) -> str:
    return next((c for c, parts in CLASSES.items() if any(p in name for p in parts)), "other")


def profiled_steps(trace: dict) -> int:
    """How many optimizer steps the trace holds: its distinct ProfilerStep#N annotations."""
    return len({e["name"] for e in trace["traceEvents"] if e.get("cat") == "user_annotation"
                and e.get("name", "").startswith("ProfilerStep#")})


def class_summary(trace: dict) -> dict[str, dict]:
    """Each kernel class's calls, summed and busy microseconds (overlaps counted once within
    the class), the costliest busy first."""
    kernels = collections.defaultdict(list)
    for e in trace["traceEvents"]:
        if e.get("cat") == "kernel":
            kernels[kernel_class(e.get("name", ""))].append(e)
    rows = {c: {"calls": len(ks), "total_us": round(sum(e["dur"] for e in ks), 1),
                "busy_us": round(busy_us(ks), 1)} for c, ks in kernels.items()}
    return dict(sorted(rows.items(), key=lambda item: -item[1]["busy_us"]))


def kernel_summary(trace: dict, pattern: str) -> dict:
    """Kernels whose name contains `pattern`: calls, mean and total (summed) microseconds, busy
    microseconds (overlaps counted once), how many streams they ran on, top grids."""
    kernels = [e for e in trace["traceEvents"]
               if e.get("cat") == "kernel" and pattern in e.get("name", "")]
    total = sum(e["dur"] for e in kernels)
    grids = collections.Counter(str(e.get("args", {}).get("grid")) for e in kernels)
    streams = {e.get("args", {}).get("stream") for e in kernels}
    return {"calls": len(kernels), "total_us": round(total, 1),
            "busy_us": round(busy_us(kernels), 1),
            "mean_us": round(total / len(kernels), 1) if kernels else None,
            "streams": len(streams), "grids": grids.most_common(4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("--match", nargs="+", default=[])
    parser.add_argument("--classes", action="store_true",
                        help="every kernel by class (CLASSES), ms a profiled step")
    args = parser.parse_args()
    with gzip.open(args.trace, "rt") as f:
        trace = json.load(f)
    everything = kernel_summary(trace, "")
    print(f"{args.trace}: {everything['calls']} kernels on {everything['streams']} streams, "
          f"{everything['total_us'] / 1000:.1f} ms summed, GPU busy "
          f"{everything['busy_us'] / 1000:.1f} ms")
    for pattern in args.match:
        row = kernel_summary(trace, pattern)
        print(f"{pattern:<12} calls {row['calls']:4d}  mean {row['mean_us']} us  "
              f"total {row['total_us'] / 1000:.1f} ms  busy {row['busy_us'] / 1000:.1f} ms  "
              f"streams {row['streams']}  grids {row['grids']}")
    if args.classes:
        steps = profiled_steps(trace) or 1
        print(f"\nby class, ms a step over {steps} profiled step(s) (busy: overlaps counted once)")
        print(f"| {'class':<32} | calls | summed ms | busy ms | of busy |")
        print(f"|{'-' * 34}|------:|----------:|--------:|--------:|")
        for name, row in class_summary(trace).items():
            print(f"| {name:<32} | {row['calls'] / steps:5.0f} "
                  f"| {row['total_us'] / steps / 1000:9.2f} | {row['busy_us'] / steps / 1000:7.2f} "
                  f"| {row['busy_us'] / everything['busy_us']:7.1%} |")
        print(f"| {'all kernels':<32} | {everything['calls'] / steps:5.0f} "
              f"| {everything['total_us'] / steps / 1000:9.2f} "
              f"| {everything['busy_us'] / steps / 1000:7.2f} | |")


if __name__ == "__main__":
    main()
