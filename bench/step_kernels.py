#!/usr/bin/env python3
"""Two pieces of XLS-R's training step alone, each against what the step runs now (issue 17,
item 2), at the step's shapes (32 clips of about 5 s: 250 frames, 46 tokens):

- CTC: PyTorch's CUDA CTC as espnet2 calls it from the sync-free step (targets on the GPU,
  lengths on the host) against `cvasr.speedups.padded_ctc` (cuDNN's CTC, certain-blank
  padding). For each: GPU time of forward + backward, the host syncs torch's sync debug mode
  reports, and `host_wait_ms`: how long the CPU is held in the loss's forward + backward while
  the GPU still has `--busy-ms` of queued work (a sync waits for all of it; the step's forward
  is what is queued in training). Losses and gradients compared.
- The positional convolution (1024 channels, kernel 128, 16 groups, bf16): cuDNN (autotuned)
  against `cvasr.speedups.grouped_conv_gemm`, forward + backward GPU time; outputs and
  gradients compared.

Prints a table and writes JSON (--out). GPU only.

    python3 bench/step_kernels.py --out bench/results/step_kernels.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cvasr.speedups.grouped_conv_gemm import grouped_conv1d_gemm  # noqa: E402
from cvasr.speedups.padded_ctc import cudnn_takes, padded_ctc_loss  # noqa: E402
from train_throughput import git_revision  # noqa: E402


def gpu_ms(fn: Callable[[], None], iters: int, warmup: int = 3) -> float:
    """Mean GPU time of fn in ms, by CUDA events around `iters` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def syncs_in(fn: Callable[[], None]) -> int:
    """Host syncs torch's sync debug mode reports in one call of fn."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def host_wait_ms(fn: Callable[[], None], busy_ms: float, iters: int = 10) -> float:
    """CPU time spent in fn while the GPU still has about busy_ms of work queued before it."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    per_mm = gpu_ms(lambda: a @ a, 5)
    waits = []
    for _ in range(iters):
        torch.cuda.synchronize()
        for _ in range(max(1, int(busy_ms / per_mm))):
            a @ a
        t0 = time.perf_counter()
        fn()
        waits.append((time.perf_counter() - t0) * 1000)
    torch.cuda.synchronize()
    return sorted(waits)[len(waits) // 2]


def bench_ctc(args: argparse.Namespace) -> dict:
    g = torch.Generator().manual_seed(0)
    batch, vocab = args.batch, args.vocab
    frames = torch.randint(args.frames - 20, args.frames + 1, (batch,), generator=g)
    frames[0] = args.frames
    labels = torch.randint(args.labels - 15, args.labels + 1, (batch,), generator=g)
    total = int(frames.max())
    targets = torch.randint(1, vocab, (int(labels.sum()),), generator=g)
    logits = torch.randn(total, batch, vocab, generator=g).cuda().requires_grad_()
    input_lengths, target_lengths = frames.tolist(), labels.tolist()
    pinned = torch.tensor(input_lengths).pin_memory()
    on_gpu, on_host = targets.cuda(), targets.to(torch.int32)
    variants = {
        # espnet2's CTC from the sync-free step: targets concatenated on the GPU (the batch
        # was copied there), lengths on the host (int64 tensors)
        "torch_native": lambda lp: F.ctc_loss(lp, on_gpu, frames, labels,
                                              reduction="none", zero_infinity=True),
        "padded_cudnn": lambda lp: padded_ctc_loss(
            lp, on_host, input_lengths, target_lengths,
            lengths_on_device=pinned.to("cuda", non_blocking=True)),
    }
    rows, outputs = {}, {}
    for name, loss_fn in variants.items():
        def step() -> None:
            logits.grad = None
            loss_fn(logits.log_softmax(-1)).sum().backward()
        logits.grad = None
        losses = loss_fn(logits.log_softmax(-1))
        losses.sum().backward()
        outputs[name] = (losses.detach().clone(), logits.grad.clone())
        rows[name] = {"gpu_ms": round(gpu_ms(step, args.iters), 3), "syncs": syncs_in(step),
                      "host_wait_ms": round(host_wait_ms(step, args.busy_ms), 2)}
    rows["padded_cudnn"]["cudnn_conditions_met"] = cudnn_takes(logits, on_host, target_lengths)
    (ref_loss, ref_grad), (loss, grad) = outputs["torch_native"], outputs["padded_cudnn"]
    rows["padded_cudnn"]["max_rel_loss_diff"] = float(((loss - ref_loss).abs()
                                                       / ref_loss.abs()).max())
    rows["padded_cudnn"]["max_abs_grad_diff"] = float((grad - ref_grad).abs().max())
    rows["padded_cudnn"]["max_abs_grad"] = float(ref_grad.abs().max())
    return {"shape": {"frames": total, "batch": batch, "vocab": vocab,
                      "labels_max": int(labels.max())}, "rows": rows}


def bench_pos_conv(args: argparse.Namespace) -> dict:
    torch.backends.cudnn.benchmark = True
    g = torch.Generator().manual_seed(0)
    channels, kernel, groups = 1024, 128, 16
    x0 = torch.randn(args.batch, channels, args.frames, generator=g).cuda().bfloat16()
    w0 = (torch.randn(channels, channels // groups, kernel, generator=g) * 0.01).cuda().bfloat16()
    b0 = torch.zeros(channels).cuda().bfloat16()
    variants = {
        "cudnn": lambda x, w, b: F.conv1d(x, w, b, padding=kernel // 2, groups=groups),
        "gemm": lambda x, w, b: grouped_conv1d_gemm(x, w, b, kernel // 2, groups),
    }
    rows, outputs = {}, {}
    grad_out = None
    for name, conv in variants.items():
        x, w, b = (t.clone().requires_grad_() for t in (x0, w0, b0))
        out = conv(x, w, b)
        if grad_out is None:
            grad_out = torch.randn_like(out)
        out.backward(grad_out)
        outputs[name] = (out.detach().float(), x.grad.float(), w.grad.float())

        def step(conv=conv, x=x, w=w, b=b) -> None:
            x.grad = w.grad = b.grad = None
            conv(x, w, b).backward(grad_out)
        torch.cuda.reset_peak_memory_stats()
        rows[name] = {"gpu_ms": round(gpu_ms(step, args.iters), 3),
                      "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
        rows[name]["forward_ms"] = round(gpu_ms(lambda conv=conv, x=x, w=w, b=b: conv(x, w, b)
                                                .detach(), args.iters), 3)
    for i, what in enumerate(("out", "x_grad", "w_grad")):
        ref, got = outputs["cudnn"][i], outputs["gemm"][i]
        rows["gemm"][f"{what}_max_rel_diff"] = float((got - ref).abs().max() / ref.abs().max())
    return {"shape": {"batch": args.batch, "channels": channels, "frames": args.frames,
                      "kernel": kernel, "groups": groups, "dtype": "bfloat16"}, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--labels", type=int, default=60)
    parser.add_argument("--vocab", type=int, default=46)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--busy-ms", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" /
                        "step_kernels.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    result = {"benchmark": "step_kernels", "git_revision": git_revision(),
              "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(),
              "ctc": bench_ctc(args), "pos_conv": bench_pos_conv(args)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['gpu']}, torch {result['torch']}, cuDNN {result['cudnn']}")
    for part in ("ctc", "pos_conv"):
        print(f"\n{part} {result[part]['shape']}")
        for name, row in result[part]["rows"].items():
            print(f"  {name:<14} " + "  ".join(f"{k} {v}" for k, v in row.items()))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
