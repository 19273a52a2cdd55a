#!/usr/bin/env python3
"""All-reduce bandwidth between the GPUs of one machine, as DDP uses it for XLS-R's gradients.

Why: 2-GPU training ran 10x slower than 1 GPU (bench/results/train_gpu_h100x2.*), with 4.7 s an
iteration outside forward and backward, about 0.3 GB/s for 317 M fp32 gradients. This measures
the same collective without the recipe: if a bare all-reduce of that size is that slow, the
cause is the machine's GPU-to-GPU transport (NCCL's own log names it; run with NCCL_DEBUG=INFO),
not espnet2 or the recipe. It also times bf16 (what `ddp_comm_hook: bf16_compress_hook` sends).
Prints a table and saves JSON.

    torchrun --nproc-per-node 2 bench/allreduce.py            # GPUs, NCCL
    torchrun --nproc-per-node 2 bench/allreduce.py --device cpu --sizes-m 1   # smoke run, gloo
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.distributed as dist

#: XLS-R 300M's trainable parameters as s3prl loads it (millions): one full gradient all-reduce
XLSR_PARAMS_M = 317.0


def bus_bandwidth(nbytes: int, seconds: float, world: int) -> float:
    """NCCL-tests' bus bandwidth of a ring all-reduce, GB/s: what each link carried."""
    return nbytes * 2 * (world - 1) / world / seconds / 1e9


def time_allreduce(numel: int, dtype: torch.dtype, device: torch.device, iters: int) -> float:
    """Median seconds of one all-reduce of `numel` elements, after two untimed ones."""
    x = torch.ones(numel, dtype=dtype, device=device)
    for _ in range(2):
        dist.all_reduce(x)
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        dist.all_reduce(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--sizes-m", type=float, nargs="+", default=[1.0, 16.0, XLSR_PARAMS_M],
                        help="elements per all-reduce, in millions")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "allreduce.json")
    args = parser.parse_args()

    if "RANK" not in os.environ:
        parser.error("start it with torchrun, e.g. torchrun --nproc-per-node 2 bench/allreduce.py")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if args.device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")

    rows = []
    for size in args.sizes_m:
        numel = int(size * 1e6)
        for dtype in (torch.float32, torch.bfloat16):
            seconds = time_allreduce(numel, dtype, device, args.iters)
            nbytes = numel * torch.empty((), dtype=dtype).element_size()
            rows.append({"elements_m": size, "dtype": str(dtype).removeprefix("torch."),
                         "seconds": round(seconds, 6),
                         "bus_gb_per_s": round(bus_bandwidth(nbytes, seconds, world), 3)})
    if rank == 0:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        print(f"all-reduce over {world} x {name or device.type}, torch {torch.__version__}, "
              f"median of {args.iters}")
        print(f"| {'elements':>10} | {'dtype':>8} | {'seconds':>9} | {'bus GB/s':>8} |")
        print(f"|{'-' * 12}|{'-' * 10}|{'-' * 11}|{'-' * 10}|")
        for r in rows:
            print(f"| {r['elements_m']:>9.1f}M | {r['dtype']:>8} | {r['seconds']:9.4f} | "
                  f"{r['bus_gb_per_s']:8.2f} |")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "benchmark": "allreduce", "device": name, "world_size": world,
            "backend": dist.get_backend(), "torch": torch.__version__,
            "nccl": ".".join(map(str, torch.cuda.nccl.version())) if device.type == "cuda" else None,
            "rows": rows}, indent=2) + "\n")
        print(f"saved {args.out}")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
