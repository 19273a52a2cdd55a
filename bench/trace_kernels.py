#!/usr/bin/env python3
"""The kernels of a profiler Chrome trace (`*.trace.json.gz`, as cvasr.training.profiling and
bench/train_throughput.py --profile write them) whose names contain a pattern: calls, mean
microseconds, the commonest launch grids, and how long the GPU was busy with them. Why: which
cuDNN algorithm ran, and on how many thread blocks, shows only in the kernels' names and grids
(bench/NOTES.md, round 11); and kernels on several streams overlap, so their summed durations
overstate the GPU time they take (cuDNN runs the positional convolution's 16 per-group kernels
on 8 side streams at once: round 12). And where the GPU waits for the CPU: each idle interval
between the profiled steps' GPU work, charged to the CPU op that launched the work ending it
(`--gaps`), and what the CPU did inside one op, with a trace taken with Python stacks
(`--inside`: round 13 found CUDA graphs' backward spending ~10 ms of Python before its replay),
and how long the CPU itself waited for the GPU in each step (`--host-waits`: the rest of the
step is what the CPU needs a step, the floor once nothing syncs; round 14).

    python3 bench/trace_kernels.py TRACE --match fprop dgrad wgrad
    python3 bench/trace_kernels.py TRACE --classes   # every kernel by class, per profiled step
    python3 bench/trace_kernels.py TRACE --gaps      # GPU idle time by the CPU op it waited on
    python3 bench/trace_kernels.py TRACE --inside "## Call CompiledFxGraph f4a3"
    python3 bench/trace_kernels.py TRACE --host-waits  # CPU waiting for the GPU, a step
    python3 bench/trace_kernels.py EPOCH_TRACE --epoch  # a whole epoch: its start, its gaps
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
from pathlib import Path
from typing import Iterator

#: the GPU's activities in a trace: kernels, copies and memsets
GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
#: the CPU's events that nest: operators, annotations, Python frames, CUDA API calls
CPU_CATS = ("cpu_op", "user_annotation", "python_function", "cuda_runtime", "cuda_driver")
#: the CUDA API calls in which the calling CPU thread waits for the GPU's queue
HOST_WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


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
    "optimizer (fused Adam, foreach)": ("multi_tensor_apply", "_adam_bf16_copies"),
    "inductor's fused kernels": ("triton_",),
    "reductions (aten)": ("reduce_kernel",),
    "CTC loss": ("ctc_loss",),
}


def kernel_class(name: str) -> str:
    return next((c for c, parts in CLASSES.items() if any(p in name for p in parts)), "other")


def _step_annotations(trace: dict) -> list[dict]:
    """The CPU side's ProfilerStep#N annotations (the GPU side repeats them as
    gpu_user_annotation)."""
    return [e for e in trace["traceEvents"] if e.get("cat") == "user_annotation"
            and e.get("name", "").startswith("ProfilerStep#")]


def profiled_steps(trace: dict) -> int:
    """How many optimizer steps the trace holds: its distinct ProfilerStep#N annotations."""
    return len({e["name"] for e in _step_annotations(trace)})


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


def match_launchers(trace: dict, pattern: str, count: int = 3) -> list[tuple[str, int]]:
    """The CPU ops that launched the kernels whose name contains `pattern` (`_launcher`: the
    outermost but the step annotation; inside a CUDA graph's replay, the op that replayed it),
    the most kernels first: where in the step they run."""
    stacks = _launch_stacks(trace)
    launchers = collections.Counter(
        _launcher(stacks.get(e.get("args", {}).get("correlation"), []))
        for e in trace["traceEvents"] if e.get("cat") == "kernel" and pattern in e.get("name", ""))
    return launchers.most_common(count)


def _step_span(trace: dict) -> tuple[float, float] | None:
    """From the start of the first ProfilerStep annotation on the CPU to the end of the last."""
    steps = _step_annotations(trace)
    if not steps:
        return None
    return min(e["ts"] for e in steps), max(e["ts"] + e["dur"] for e in steps)


def _nesting(events: list[dict]) -> Iterator[tuple[dict, list[dict]]]:
    """Each of one thread's CPU events, in order of start (the longer first at a tie), with the
    events still open around it, outermost first (a list valid until the next step)."""
    open_events: list[dict] = []
    for e in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
        while open_events and open_events[-1]["ts"] + open_events[-1]["dur"] <= e["ts"]:
            open_events.pop()
        yield e, open_events
        open_events.append(e)


def _launch_stacks(trace: dict) -> dict[int, list[str]]:
    """Each CUDA API call's correlation id -> the names of the operators and annotations around
    it, outermost first (`_nesting`, a thread at a time). Python frames (a --profile-stack
    trace) are left out: the outermost would be the script."""
    by_thread = collections.defaultdict(list)
    for e in trace["traceEvents"]:
        if e.get("cat") in CPU_CATS and e.get("cat") != "python_function" and "dur" in e:
            by_thread[e.get("tid")].append(e)
    stacks = {}
    for events in by_thread.values():
        for e, around in _nesting(events):
            correlation = e.get("args", {}).get("correlation")
            if e["cat"] in ("cuda_runtime", "cuda_driver") and correlation is not None:
                stacks[correlation] = [o["name"] for o in around]
    return stacks


def _launcher(stack: list[str]) -> str:
    """The outermost CPU event of a launch but the step annotation, so that the same op in
    every step is one row."""
    names = [n for n in stack if not n.startswith("ProfilerStep#")]
    return names[0] if names else "(no CPU op)"


def idle_gaps(trace: dict, min_gap_us: float = 20.0) -> list[dict]:
    """The intervals of at least `min_gap_us` inside the profiled steps in which no GPU work ran,
    each with the CPU events around the launch of the work that ended it (`launched_in`,
    outermost first): what the GPU was waiting for."""
    span = _step_span(trace)
    activities = sorted((e for e in trace["traceEvents"] if e.get("cat") in GPU_CATS),
                        key=lambda e: e["ts"])
    if span is not None:
        activities = [e for e in activities if span[0] <= e["ts"] <= span[1]]
    stacks = _launch_stacks(trace)
    gaps, end = [], None
    for e in activities:
        if end is not None and e["ts"] - end >= min_gap_us:
            gaps.append({"start": end, "us": e["ts"] - end, "next": e.get("name", ""),
                         "launched_in": stacks.get(e.get("args", {}).get("correlation"), [])})
        end = e["ts"] + e["dur"] if end is None else max(end, e["ts"] + e["dur"])
    return gaps


def epoch_timeline(trace: dict, min_gap_us: float = 1000.0) -> dict:
    """A whole epoch's trace (train_throughput.py --profile writes one): its span from the first
    CPU event to the last GPU activity's end, the GPU's busy time in it, the idle time before its
    first GPU work (the epoch's start: iterator, first batch), and each idle gap of at least
    `min_gap_us` after that, with when it began (ms into the epoch), the CPU op that launched the
    work ending it, and the outermost CPU op of the main thread that overlapped it most (what
    the CPU was doing meanwhile)."""
    cpu = [e for e in trace["traceEvents"] if e.get("cat") in CPU_CATS and "dur" in e]
    gpu = sorted((e for e in trace["traceEvents"] if e.get("cat") in GPU_CATS),
                 key=lambda e: e["ts"])
    if not cpu or not gpu:
        return {}
    start = min(e["ts"] for e in cpu)
    end = max(e["ts"] + e["dur"] for e in gpu)
    # the main thread: the one that launched the most GPU work
    launches = collections.Counter(e.get("tid") for e in cpu if e["cat"] == "cuda_runtime")
    main = launches.most_common(1)[0][0] if launches else None
    outer = [e for e, around in _nesting([e for e in cpu if e.get("tid") == main
                                          and e["cat"] != "python_function"]) if not around]
    stacks = _launch_stacks(trace)
    gaps, last = [], None
    for e in gpu:
        if last is not None and e["ts"] - last >= min_gap_us:
            overlap = max(outer, key=lambda o: min(o["ts"] + o["dur"], e["ts"]) - max(o["ts"], last),
                          default=None)
            gaps.append({"at_ms": round((last - start) / 1000, 2),
                         "ms": round((e["ts"] - last) / 1000, 2),
                         "ended_by": _launcher(stacks.get(e.get("args", {}).get("correlation"), [])),
                         "cpu_meanwhile": overlap["name"] if overlap else ""})
        last = e["ts"] + e["dur"] if last is None else max(last, e["ts"] + e["dur"])
    busy = busy_us(gpu)
    return {"span_ms": round((end - start) / 1000, 2), "busy_ms": round(busy / 1000, 2),
            "idle_ms": round((end - start - busy) / 1000, 2),
            "before_first_gpu_work_ms": round((gpu[0]["ts"] - start) / 1000, 2),
            "first_gpu_work_launched_in": _launcher(
                stacks.get(gpu[0].get("args", {}).get("correlation"), [])),
            "gaps": gaps}


def idle_by_launcher(gaps: list[dict]) -> dict[str, dict]:
    """Idle microseconds and gaps per launching CPU op (`_launcher`), the most idle first."""
    rows = collections.defaultdict(lambda: {"gaps": 0, "idle_us": 0.0})
    for gap in gaps:
        row = rows[_launcher(gap["launched_in"])]
        row["gaps"] += 1
        row["idle_us"] = round(row["idle_us"] + gap["us"], 3)
    return dict(sorted(rows.items(), key=lambda item: -item[1]["idle_us"]))


def gpu_work_launched_in(trace: dict, prefix: str) -> tuple[int, float]:
    """The GPU activities launched inside a CPU event whose name starts with `prefix` (an
    operator or annotation, `_launch_stacks`): how many, and their busy microseconds."""
    stacks = _launch_stacks(trace)
    work = [e for e in trace["traceEvents"] if e.get("cat") in GPU_CATS
            and any(n.startswith(prefix)
                    for n in stacks.get(e.get("args", {}).get("correlation"), []))]
    return len(work), busy_us(work)


def nested_cpu_time(trace: dict, prefix: str) -> tuple[int, dict[str, dict]]:
    """The CPU events nested inside every event whose name starts with `prefix`, by name: how
    many, their total microseconds (a frame inside another of its name counted once) and self
    microseconds (less their children's), the most total first; and how many `prefix` events
    there were."""
    outer = [e for e in trace["traceEvents"] if e.get("cat") in CPU_CATS
             and e.get("name", "").startswith(prefix) and "dur" in e]
    rows = collections.defaultdict(lambda: {"calls": 0, "total_us": 0.0, "self_us": 0.0})
    for o in outer:
        inside = [e for e in trace["traceEvents"] if e.get("cat") in CPU_CATS
                  and e.get("tid") == o.get("tid") and "dur" in e and e is not o
                  and o["ts"] <= e["ts"] and e["ts"] + e["dur"] <= o["ts"] + o["dur"]]
        for e, around in _nesting(inside):
            if around:
                rows[around[-1]["name"]]["self_us"] -= e["dur"]
            row = rows[e["name"]]
            row["calls"] += 1
            if all(a["name"] != e["name"] for a in around):  # recursion counted once
                row["total_us"] += e["dur"]
            row["self_us"] += e["dur"]
    rounded = {name: {k: round(v, 3) for k, v in row.items()} for name, row in rows.items()}
    return len(outer), dict(sorted(rounded.items(), key=lambda item: -item[1]["total_us"]))


def host_waits(trace: dict) -> list[dict]:
    """Each profiled step (its ProfilerStep#N annotation): its length, and the time its thread
    spent in CUDA calls that wait for the GPU (HOST_WAITS), in microseconds. The difference is
    what the CPU did a step: the step's length once no sync makes it wait."""
    waits = [e for e in trace["traceEvents"]
             if e.get("cat") == "cuda_runtime" and e.get("name") in HOST_WAITS]
    rows = []
    for step in sorted(_step_annotations(trace), key=lambda e: e["ts"]):
        inside = [e for e in waits if e.get("tid") == step.get("tid")
                  and step["ts"] <= e["ts"] < step["ts"] + step["dur"]]
        rows.append({"step": step["name"], "step_us": step["dur"],
                     "waited_us": sum(e["dur"] for e in inside), "calls": len(inside)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("--match", nargs="+", default=[])
    parser.add_argument("--classes", action="store_true",
                        help="every kernel by class (CLASSES), ms a profiled step")
    parser.add_argument("--gaps", action="store_true",
                        help="the GPU's idle time in the profiled steps, by the CPU op that "
                             "launched the work ending each idle interval")
    parser.add_argument("--min-gap-us", type=float, default=20.0)
    parser.add_argument("--epoch", action="store_true",
                        help="a whole epoch's trace (out.epoch.trace.json.gz): its span, the "
                             "GPU's busy and idle time, its start before any GPU work, and each "
                             "idle gap of 1 ms or more with what the CPU was doing")
    parser.add_argument("--inside", metavar="PREFIX",
                        help="CPU time (Python frames with a --profile-stack trace) inside the "
                             "events whose name starts with PREFIX, a call of them")
    parser.add_argument("--host-waits", action="store_true",
                        help="each profiled step's length and the time the CPU waited in it "
                             "for the GPU (synchronising CUDA calls)")
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
        for launcher, calls in match_launchers(trace, pattern):
            print(f"{'':<12} {calls:4d} launched in {launcher[:90]}")
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
    if args.gaps:
        steps = profiled_steps(trace) or 1
        span = _step_span(trace)
        gaps = idle_gaps(trace, args.min_gap_us)
        idle = sum(g["us"] for g in gaps)
        print(f"\nGPU idle in gaps of >= {args.min_gap_us:g} us, ms a step over {steps} profiled "
              f"step(s): {idle / steps / 1000:.2f} of a "
              f"{(span[1] - span[0]) / steps / 1000 if span else float('nan'):.2f} ms step")
        print("| launched in (outermost CPU op) | gaps | idle ms |")
        print("|---|---:|---:|")
        for name, row in list(idle_by_launcher(gaps).items())[:20]:
            print(f"| {name[:70]} | {row['gaps'] / steps:.1f} "
                  f"| {row['idle_us'] / steps / 1000:.2f} |")
    if args.epoch:
        timeline = epoch_timeline(trace)
        print(f"\nthe epoch: {timeline.get('span_ms')} ms, GPU busy {timeline.get('busy_ms')}, "
              f"idle {timeline.get('idle_ms')}; before its first GPU work "
              f"{timeline.get('before_first_gpu_work_ms')} ms (launched in "
              f"{timeline.get('first_gpu_work_launched_in')})")
        gaps = timeline.get("gaps", [])
        print(f"{len(gaps)} idle gap(s) of >= 1 ms after it, {sum(g['ms'] for g in gaps):.2f} ms:")
        for gap in gaps[:40]:
            print(f"  at {gap['at_ms']:9.2f} ms  {gap['ms']:7.2f} ms  ended by {gap['ended_by'][:50]}"
                  f"  (CPU meanwhile: {gap['cpu_meanwhile'][:60]})")
    if args.host_waits:
        rows = host_waits(trace)
        print("\nthe CPU in each profiled step, ms: the step, waiting for the GPU (syncing CUDA "
              "calls), the rest")
        for row in rows:
            print(f"{row['step']:<16} {row['step_us'] / 1000:8.2f} {row['waited_us'] / 1000:8.2f}"
                  f" ({row['calls']} calls) {(row['step_us'] - row['waited_us']) / 1000:8.2f}")
        if rows:
            mean = {k: sum(r[k] for r in rows) / len(rows) / 1000 for k in ("step_us", "waited_us")}
            print(f"{'mean':<16} {mean['step_us']:8.2f} {mean['waited_us']:8.2f}"
                  f"{'':>10} {mean['step_us'] - mean['waited_us']:8.2f}")
    if args.inside:
        count, rows = nested_cpu_time(trace, args.inside)
        print(f"\nCPU inside {count} event(s) named {args.inside}*, ms a call (total, self)")
        per_call = max(count, 1)
        launched, busy = gpu_work_launched_in(trace, args.inside)
        print(f"GPU work launched inside them, a call: {launched / per_call:.0f} kernels, copies "
              f"and memsets, busy {busy / per_call / 1000:.2f} ms")
        for name, row in list(rows.items())[:25]:
            print(f"{row['total_us'] / per_call / 1000:8.2f} {row['self_us'] / per_call / 1000:8.2f}"
                  f" {row['calls'] / per_call:6.0f}x  {name[:100]}")


if __name__ == "__main__":
    main()
