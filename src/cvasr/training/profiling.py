"""A profile of a few training steps of a real stage-4 run, in every process.

`--profile_epoch N --profile_steps K`: in epoch N, after 2 steps (the epoch's first batches wait
for the workers), K steps run under torch.profiler; each process writes
`<exp>/profile/epoch<N>_rank<R>.txt` (its op tables: GPU time, then CPU time, then each host
sync with the Python stack that made it) and `.trace.json.gz` (a Chrome trace). What the step
bench's profile cannot show, this one does: the step under DDP (the gradient all-reduce against
the backward), espnet2's own loop, the data of the run.
"""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

#: steps of the epoch left out before profiling starts
SKIPPED_STEPS = 2

#: the profiler's names of the calls that hold the host until the device is done: CUDA's
#: synchronising calls and a tensor's value read on the host (`.item()`, `bool(t)`, ...)
HOST_SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
              "cudaMemcpy", "aten::_local_scalar_dense")

#: Python frames kept for each host sync in the profile's table
STACK_FRAMES = 12


def profile_path(output_dir: Path, epoch: int) -> Path:
    """Where this process's profile of `epoch` goes (without suffix)."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    return Path(output_dir) / "profile" / f"epoch{epoch}_rank{rank}"


class profiled:
    """`iterator`'s items; the work the consumer does on items SKIPPED_STEPS ..
    SKIPPED_STEPS + steps - 1 runs under torch.profiler, written to `out` (.txt, .trace.json.gz)
    when done or when the epoch ends first. Its length is the iterator's: the sync-free loop
    reads it (its log interval, the batches every DDP rank trains)."""

    def __init__(self, iterator: Iterable[Any], out: Path, steps: int, cuda: bool) -> None:
        self.iterator, self.out, self.steps, self.cuda = iterator, out, steps, cuda

    def __len__(self) -> int:
        return len(self.iterator)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        from torch.profiler import ProfilerActivity, _ExperimentalConfig, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        prof = None
        try:
            for n, item in enumerate(self.iterator):
                if n == SKIPPED_STEPS:
                    # verbose: the events keep their Python stacks (host_syncs_by_stack)
                    prof = profile(activities=activities, with_stack=True,
                                   experimental_config=_ExperimentalConfig(verbose=True))
                    prof.start()
                yield item  # the consumer's step runs until it asks for the next item
                if prof is not None and n + 1 == SKIPPED_STEPS + self.steps:
                    _write(prof, self.out, self.cuda)
                    prof = None
        finally:
            if prof is not None:
                _write(prof, self.out, self.cuda)


def _write(prof: Any, out: Path, cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()
    prof.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    averages = prof.key_averages()
    tables = []
    if cuda:
        tables.append(averages.table(sort_by="cuda_time_total", row_limit=60))
    tables.append(averages.table(sort_by="self_cpu_time_total", row_limit=40))
    tables.append(host_syncs_by_stack(prof))
    out.with_suffix(".txt").write_text("\n\n".join(tables) + "\n", encoding="utf-8")
    trace = out.with_suffix(".trace.json")
    prof.export_chrome_trace(str(trace))
    with open(trace, "rb") as src, gzip.open(f"{trace}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    trace.unlink()


def host_syncs_by_stack(prof: Any) -> str:
    """The profiled steps' host syncs (HOST_SYNCS), counted by the Python stack that made them
    (an op called inside another, as `.item()`'s value read, takes its caller's), most time
    first: where a step waits for the device, which the op tables cannot say."""
    found: dict[tuple[str, tuple[str, ...]], list[float]] = {}
    for event in prof.events():
        if event.name not in HOST_SYNCS:
            continue
        caller = event
        while caller is not None and not caller.stack:
            caller = caller.cpu_parent
        # frames name the tensor object ("method item of Tensor object at 0x7f..."): not a key
        stack = tuple(re.sub(r" at 0x[0-9a-f]+", "", frame)
                      for frame in (caller.stack[:STACK_FRAMES] if caller is not None else ()))
        found.setdefault((event.name, stack), []).append(event.cpu_time_total)
    total = sum(len(times) for times in found.values())
    lines = [f"Host syncs by Python stack ({total} in all)"]
    for (name, stack), times in sorted(found.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"{name}: {len(times)} calls, {sum(times) / 1000:.3f} ms on the host")
        lines.extend(f"    {frame}" for frame in stack or ["(no Python stack)"])
    return "\n".join(lines)
