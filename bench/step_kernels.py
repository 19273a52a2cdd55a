#!/usr/bin/env python3
"""Pieces of XLS-R's training step alone, each against what the step runs now (issue 17, item
2), at the step's shapes (32 clips of about 5 s: 250 frames, 46 tokens):

- CTC: PyTorch's CUDA CTC as espnet2 calls it from the sync-free step (targets on the GPU,
  lengths on the host) against `padded_ctc_loss` below (cuDNN's CTC, certain-blank padding)
  and `cvasr.speedups.ctc_triton` (Triton kernels, every length on the GPU). For each: GPU
  time of forward + backward, the host syncs torch's sync debug mode reports, and
  `host_wait_ms`: how long the CPU is held in the loss's forward + backward while the GPU
  still has `--busy-ms` of queued work (a sync waits for all of it; the step's forward is what
  is queued in training). Losses and gradients compared.
- SpecAugment's time masking: espnet2's against `cvasr.speedups.sync_free_specaug`'s (GPU
  time, host syncs, CPU held).
- The positional convolution (1024 channels, kernel 128, 16 groups, bf16): cuDNN autotuned
  (`cudnn_benchmark: true`) and not, cuDNN autotuned on the frames padded as
  cvasr.models.frontend pads them (POS_CONV_FRAMES), `grouped_conv1d_gemm` below, and the
  convolution through FFTs (`cvasr.speedups.fft_pos_conv`, `frontend_conf: {pos_conv_impl:
  fft}`); forward + backward GPU time; outputs and gradients compared; cuDNN's also under
  `cudnn.deterministic` (espnet2's default) and inside a compiled graph, as training runs it;
  each variant's costliest kernels by name (which algorithm ran). About the training step's mean
  batch: `--batch 34 --frames 330` (an estimate, bench/NOTES.md round 11).
- One transformer layer, compiled, forward + backward (`--parts layer`): with the checkpoint's
  pre-training dropouts (0.1) and the seed's fine-tuning ones (0.0), each also with its
  feed-forward GEMMs in float8 (cvasr.speedups.float8_ffn): what each would save in the step.
- Self-attention as s3prl's layers call it in training (16 heads of 64, bf16, the clips'
  padding as a key mask, attention dropout 0.1): forward + backward through each of SDPA's
  backends that takes it (cuDNN's, which the step runs, and the memory-efficient one), and
  without the mask (flash and cuDNN: what a batch without padding would cost). In the step's
  traces (rounds 11 and 13) attention took 10.0-10.2 ms a step for about 1.3 TFLOP, 13% of the
  bf16 peak where the GEMMs run at 60%. Outputs and gradients compared with dropout off,
  against the math backend in float32.

Neither replaced what the step runs (bench/NOTES.md, round 5): cuDNN's CTC, as PyTorch 2.11
calls it, still holds the CPU until the GPU's queue is done, and the GEMM is 7x slower than
cuDNN's grouped convolution at these shapes. They stay here, tested (tests/test_step_kernels.py),
as the measured alternatives.

**CTC through cuDNN with certain-blank padding.** PyTorch's CUDA CTC copies its host-side
bookkeeping (lengths, the targets' offsets) to the GPU with blocking copies. PyTorch hands the
loss to cuDNN instead when the targets are int32 on the host, blank is 0, no target is 256
labels or longer and every input length equals the padded length T. A batch of clips of several
lengths meets the last condition without a change of loss if every frame past a clip's length
gets the log-probabilities of a certain blank (0 for blank, -inf for the rest) and the clip is
given length T: every alignment of the padded clip is one of the clip followed by blanks, with
the same probability, and no other has a non-zero one; the padded frames are constants, so the
real frames' gradients are unchanged. An unalignable clip stays infinite; zero_infinity zeroes
it as PyTorch does.

**The grouped positional convolution as one batched GEMM** of each group's weights (O/G x C/G x
K) with the frames' windows (T x C/G*K a group), on the tensor cores, at the cost of
materialising the windows (B x C x T x K values).

Prints a table and writes JSON (--out). GPU only.

    python3 bench/step_kernels.py --out bench/results/step_kernels.json
    python3 bench/step_kernels.py --batch 34 --frames 330 --parts attention --out ...
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import git_revision, peak_flops  # noqa: E402  (numpy only at import)


def certain_blank_padding(log_probs: torch.Tensor, lengths: torch.Tensor,
                          blank: int = 0) -> torch.Tensor:
    """`log_probs` (T, B, V) with every frame t >= lengths[b] of clip b a certain blank.

    `lengths` (B,) on log_probs' device (copied without blocking from pinned memory by the
    caller where it matters)."""
    frames = torch.arange(log_probs.size(0), device=log_probs.device)
    padding = (frames[:, None] >= lengths[None, :])[..., None]  # (T, B, 1)
    blank_frame = torch.full((log_probs.size(-1),), float("-inf"), dtype=log_probs.dtype,
                             device=log_probs.device)
    blank_frame[blank] = 0.0
    return torch.where(padding, blank_frame, log_probs)


def padded_ctc_loss(log_probs: torch.Tensor, targets: torch.Tensor,
                    input_lengths: Sequence[int], target_lengths: Sequence[int],
                    lengths_on_device: torch.Tensor | None = None,
                    zero_infinity: bool = True) -> torch.Tensor:
    """Per-clip CTC losses (B,), as `F.ctc_loss(..., reduction="none")` gives them.

    `log_probs` (T, B, V) float32 (log-softmax output), `targets` the clips' labels
    concatenated on the host (int32 for cuDNN), `input_lengths` and `target_lengths` host
    integers; `lengths_on_device` the input lengths already on log_probs' device, if the
    caller has them. Blank is token 0.
    """
    if lengths_on_device is None:
        lengths_on_device = torch.as_tensor(list(input_lengths)).to(log_probs.device,
                                                                    non_blocking=True)
    padded = certain_blank_padding(log_probs, lengths_on_device)
    total = log_probs.size(0)
    losses = F.ctc_loss(padded, targets, [total] * log_probs.size(1), list(target_lengths),
                        blank=0, reduction="none", zero_infinity=zero_infinity)
    if zero_infinity:  # PyTorch's cuDNN path zeroes such clips' gradient, not their loss
        losses = torch.where(torch.isinf(losses), torch.zeros_like(losses), losses)
    return losses


def cudnn_takes(log_probs: torch.Tensor, targets: torch.Tensor,
                target_lengths: Sequence[int]) -> bool:
    """Whether PyTorch hands padded_ctc_loss's call to cuDNN (its conditions, checked here so a
    caller can say which CTC ran)."""
    return (log_probs.is_cuda and log_probs.dtype == torch.float32
            and torch.backends.cudnn.enabled and targets.device.type == "cpu"
            and targets.dtype == torch.int32 and targets.dim() == 1
            and all(n < 256 and n <= log_probs.size(0) for n in target_lengths))


def grouped_conv1d_gemm(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                        padding: int, groups: int) -> torch.Tensor:
    """`F.conv1d(x, weight, bias, padding=padding, groups=groups)` (stride 1, no dilation) as a
    batched GEMM; x (B, C, T), weight (O, C / groups, K)."""
    batch, channels, _ = x.shape
    out_channels, group_channels, kernel = weight.shape
    if group_channels * groups != channels or out_channels % groups:
        raise ValueError(f"weight {tuple(weight.shape)} does not fit {channels} channels in "
                         f"{groups} groups")
    windows = F.pad(x, (padding, padding)).unfold(2, kernel, 1)  # (B, C, T', K), a view
    frames = windows.size(2)
    windows = (windows.reshape(batch, groups, group_channels, frames, kernel).transpose(2, 3)
               .reshape(batch, groups, frames, group_channels * kernel))
    group_weight = weight.reshape(groups, out_channels // groups, group_channels * kernel)
    out = torch.matmul(windows, group_weight.transpose(1, 2))  # (B, G, T', O / G)
    out = out.transpose(2, 3).reshape(batch, out_channels, frames)
    return out if bias is None else out + bias[:, None]


def gemm_queue() -> Callable[[float], None]:
    """A function that queues about `ms` of bf16 GEMMs on the GPU and returns at once, so the
    CPU is that far ahead of the GPU for what it launches next."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    per_mm = gpu_ms(lambda: a @ a, 5)

    def queue(ms: float) -> None:
        for _ in range(max(1, int(ms / per_mm))):
            a @ a
    return queue


def gpu_ms(fn: Callable[[], None], iters: int, warmup: int = 3, cpu_ahead_ms: float = 0.0) -> float:
    """Mean GPU time of fn in ms, by CUDA events around `iters` calls. With `cpu_ahead_ms`, that
    much GPU work is queued before the first event while the CPU queues the calls behind it, so
    the events time the GPU's own work, not the gaps a CPU-bound fn leaves (a compiled layer's 79
    kernels launched from Python and autograd varied by 0.7 ms between identical kernels without
    it, round 19); it needs `iters` x fn's CPU time below it."""
    for _ in range(warmup):
        fn()
    queue = gemm_queue() if cpu_ahead_ms else None
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    if queue is not None:
        queue(cpu_ahead_ms)
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
    queue = gemm_queue()
    waits = []
    for _ in range(iters):
        torch.cuda.synchronize()
        queue(busy_ms)
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
    pinned_labels = labels.pin_memory()
    on_gpu, on_host = targets.cuda(), targets.to(torch.int32)
    padded = torch.zeros(batch, int(labels.max()), dtype=torch.long)  # as espnet2's ys_pad
    for b, (start, n) in enumerate(zip(labels.cumsum(0) - labels, target_lengths)):
        padded[b, :n] = targets[start:start + n]
    padded = padded.cuda()
    sys.path.insert(0, str(REPO / "src"))
    from cvasr.speedups.ctc_triton import triton_ctc_loss

    variants = {
        # espnet2's CTC from the sync-free step: targets concatenated on the GPU (the batch
        # was copied there), lengths on the host (int64 tensors)
        "torch_native": lambda lp: F.ctc_loss(lp, on_gpu, frames, labels,
                                              reduction="none", zero_infinity=True),
        "padded_cudnn": lambda lp: padded_ctc_loss(
            lp, on_host, input_lengths, target_lengths,
            lengths_on_device=pinned.to("cuda", non_blocking=True)),
        # cvasr.speedups.ctc_triton: padded targets and lengths on the GPU (the lengths copied
        # from pinned memory), the longest target a host integer
        "triton": lambda lp: triton_ctc_loss(
            lp, padded, pinned.to("cuda", non_blocking=True),
            pinned_labels.to("cuda", non_blocking=True), int(labels.max())),
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
    ref_loss, ref_grad = outputs["torch_native"]
    for name in ("padded_cudnn", "triton"):
        loss, grad = outputs[name]
        rows[name]["max_rel_loss_diff"] = float(((loss - ref_loss).abs() / ref_loss.abs()).max())
        rows[name]["max_abs_grad_diff"] = float((grad - ref_grad).abs().max())
        rows[name]["max_abs_grad"] = float(ref_grad.abs().max())
    return {"shape": {"frames": total, "batch": batch, "vocab": vocab,
                      "labels_max": int(labels.max())}, "rows": rows}


def bench_specaug(args: argparse.Namespace) -> dict:
    """espnet2's time masking (the XLS-R config's: 4 masks, up to 5% of the length) against
    `cvasr.speedups.sync_free_specaug`'s, on the upstream's output (B, T, 1024) in bf16."""
    sys.path.insert(0, str(REPO / "src"))
    from espnet2.layers.mask_along_axis import mask_along_axis

    from cvasr.speedups.sync_free_specaug import mask_along_axis_sync_free

    x = torch.randn(args.batch, args.frames, 1024, device="cuda", dtype=torch.bfloat16)
    width = (0, int(args.frames * 0.05))
    variants = {
        "espnet2": lambda: mask_along_axis(x, None, mask_width_range=width, dim=1, num_mask=4),
        "sync_free": lambda: mask_along_axis_sync_free(x, width, dim=1, num_mask=4),
    }
    rows = {name: {"gpu_ms": round(gpu_ms(fn, args.iters), 3), "syncs": syncs_in(fn),
                   "host_wait_ms": round(host_wait_ms(fn, args.busy_ms), 2)}
            for name, fn in variants.items()}
    return {"shape": {"batch": args.batch, "frames": args.frames, "mask_width": width},
            "rows": rows}


def top_kernels(fn: Callable[[], object], count: int = 3) -> list[dict]:
    """The kernels one call of `fn` runs, the costliest first: name, calls and summed
    microseconds (CPU ops where there is no GPU). Which algorithm cuDNN chose shows only here:
    its kernels' names (per-group "analytic" kernels in the training step's profile). The sums
    can exceed the call's gpu_ms: cuDNN runs those per-group kernels on side streams at once."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():  # with the CUDA activity alone: kernels and copies
        us = event.self_device_time_total if cuda else event.self_cpu_time_total
        if us > 0:
            rows.append({"name": event.key[:120], "calls": event.count, "us": round(us, 1)})
    return sorted(rows, key=lambda row: -row["us"])[:count]


def bench_pos_conv(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(REPO / "src"))
    from cvasr.models.frontend import positional_conv_padding  # imports espnet2
    from cvasr.speedups.fft_pos_conv import fft_grouped_conv

    g = torch.Generator().manual_seed(0)
    channels, kernel, groups = 1024, 128, 16
    x0 = torch.randn(args.batch, channels, args.frames, generator=g).cuda().bfloat16()
    w0 = (torch.randn(channels, channels // groups, kernel, generator=g) * 0.01).cuda().bfloat16()
    b0 = torch.zeros(channels).cuda().bfloat16()
    frames = args.frames + 1  # the convolution's output (wav2vec 2.0's SamePad cuts one)
    pad = positional_conv_padding(args.frames)

    def cudnn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, w, b, padding=kernel // 2, groups=groups)

    def from_frames_major(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # x as the transformer holds it, (B, T, C) in memory, seen as (B, C, T)
        return cudnn(x.transpose(1, 2).contiguous().transpose(1, 2), w, b)

    def padded(conv):  # as cvasr.models.frontend pads them (positional_conv_padding)
        return lambda x, w, b: conv(F.pad(x, (0, pad)), w, b)[..., :frames]

    # name: (the convolution, cuDNN's autotuning on, cuDNN restricted to deterministic algorithms)
    variants = {
        "cudnn": (cudnn, True, False),
        "cudnn_untuned": (cudnn, False, False),
        "cudnn_btc_input": (from_frames_major, True, False),
        "cudnn_btc_input_untuned": (from_frames_major, False, False),
        "cudnn_padded": (padded(cudnn), True, False),
        # espnet2's default `cudnn_deterministic: true`, which the training step runs under: in
        # the step's profile (bench/results/step_fft2_26e4dff) cuDNN ran the convolution as 16
        # per-group "analytic" kernels a pass, about 9 ms a step against 2 ms here
        "cudnn_deterministic": (cudnn, True, True),
        "cudnn_as_trained": (padded(from_frames_major), True, True),
        # inside an inductor graph, as the compiled transformer calls it (its layouts, its
        # backward graph)
        "cudnn_compiled": (torch.compile(padded(from_frames_major), fullgraph=True,
                                         dynamic=False), True, True),
        "gemm": (lambda x, w, b: grouped_conv1d_gemm(x, w, b, kernel // 2, groups), True, False),
        # its T frames (what SamePad keeps) and a zero for the frame the others add
        "fft": (lambda x, w, b: F.pad(fft_grouped_conv(x.transpose(1, 2), w, b, groups)
                                      .transpose(1, 2), (0, 1)), True, False),
    }
    rows, outputs = {}, {}
    grad_out = None
    for name, (conv, tuned, deterministic) in variants.items():
        torch.backends.cudnn.benchmark = tuned
        torch.backends.cudnn.deterministic = deterministic
        x, w, b = (t.clone().requires_grad_() for t in (x0, w0, b0))
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = conv(x, w, b)  # the first at this shape: with autotuning, cuDNN tunes it here
        if grad_out is None:
            grad_out = torch.randn_like(out)
            grad_out[..., -1] = 0  # the frame SamePad drops: training sends it no gradient
        out.backward(grad_out)
        torch.cuda.synchronize()
        first_ms = (time.perf_counter() - t0) * 1000
        outputs[name] = (out.detach().float(), x.grad.float(), w.grad.float())

        def step(conv=conv, x=x, w=w, b=b) -> None:
            x.grad = w.grad = b.grad = None
            conv(x, w, b).backward(grad_out)
        torch.cuda.reset_peak_memory_stats()
        rows[name] = {"first_call_ms": round(first_ms, 1),
                      "gpu_ms": round(gpu_ms(step, args.iters), 3),
                      "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
        rows[name]["forward_ms"] = round(gpu_ms(lambda conv=conv, x=x, w=w, b=b: conv(x, w, b)
                                                .detach(), args.iters), 3)
        rows[name]["kernels"] = top_kernels(step)
    torch.backends.cudnn.deterministic = False
    for name in ("cudnn_padded", "cudnn_as_trained", "cudnn_compiled", "gemm", "fft"):
        for i, what in enumerate(("out", "x_grad", "w_grad")):
            ref, got = outputs["cudnn"][i], outputs[name][i]
            if what == "out":  # the frames SamePad keeps
                ref, got = ref[..., :args.frames], got[..., :args.frames]
            rows[name][f"{what}_max_rel_diff"] = float((got - ref).abs().max() / ref.abs().max())
    return {"shape": {"batch": args.batch, "channels": channels, "frames": args.frames,
                      "padded_frames": args.frames + pad, "kernel": kernel, "groups": groups,
                      "dtype": "bfloat16"}, "rows": rows}


def key_padding_mask(frames: Sequence[int], total: int, device: str = "cpu") -> torch.Tensor:
    """SDPA's boolean attention mask for clips of `frames` frames padded to `total`: True where
    a query may attend, every query of clip b to its first frames[b] keys, shaped (B, 1, 1, T)
    to broadcast over heads and queries, as `F.multi_head_attention_forward` builds it from
    s3prl's key padding mask."""
    lengths = torch.as_tensor(frames, device=device)
    return (torch.arange(total, device=device) < lengths[:, None])[:, None, None, :]


#: SDPA's backends, by the names the JSON uses
SDPA_BACKENDS = {"cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                 "flash": "FLASH_ATTENTION", "math": "MATH"}


def attention_variants(cuda: bool) -> dict[str, tuple[str, bool]]:
    """name -> (SDPA backend, with the key padding mask): what bench_attention times. Flash
    takes no mask, so its rows (and cuDNN's unmasked one) are the cost without padding; on the
    CPU only the math backend runs."""
    if not cuda:
        return {"math": ("math", True)}
    return {"cudnn": ("cudnn", True), "efficient": ("efficient", True),
            "cudnn_unmasked": ("cudnn", False), "flash_unmasked": ("flash", False),
            "math": ("math", True)}


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     mask: Optional[torch.Tensor], backend: str,
                     dropout_p: float) -> torch.Tensor:
    """F.scaled_dot_product_attention on one backend alone (an error, not a silent fallback,
    where it cannot take the inputs)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(getattr(SDPBackend, SDPA_BACKENDS[backend])):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def bench_attention(args: argparse.Namespace) -> dict:
    """Forward + backward of the step's self-attention per backend: GPU ms, the attention's
    FLOPs a second as a share of the bf16 peak, the costliest kernels; outputs and gradients
    (dropout off) against the math backend in float32, on the frames each clip has."""
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    heads, head_dim, total = 16, 64, args.frames
    # a sorted batch: the clips' lengths within 5% of the longest
    frames = torch.linspace(total, round(total * 0.95), args.batch).round().long().tolist()
    g = torch.Generator().manual_seed(0)
    q0, k0, v0 = (torch.randn(args.batch, heads, total, head_dim, generator=g).to(device)
                  .to(torch.bfloat16 if cuda else torch.float32) for _ in range(3))
    mask = key_padding_mask(frames, total, device)
    grad_out = torch.randn(q0.shape, generator=g).to(device).to(q0.dtype)
    # QK^T and PV, 2 FLOP a multiply-add, forward; the backward does 2.5 times that (its
    # recomputed QK^T and four products)
    flop = 2 * 2 * args.batch * heads * total * total * head_dim * 3.5
    peak = peak_flops(torch.cuda.get_device_name(0)) if cuda else None

    def grads(backend: str, masked: bool, dropout_p: float, dtype: torch.dtype):
        q, k, v = (t.detach().to(dtype).requires_grad_() for t in (q0, k0, v0))
        out = masked_attention(q, k, v, mask if masked else None, backend, dropout_p)
        out.backward(grad_out.to(dtype))
        return out.detach(), q.grad, k.grad, v.grad

    reference = grads("math", True, 0.0, torch.float32)
    rows = {}
    for name, (backend, masked) in attention_variants(cuda).items():
        row: dict = {"backend": backend, "masked": masked}
        try:
            got = grads(backend, masked, 0.0, q0.dtype)
        except RuntimeError as err:  # the backend does not take these inputs here
            rows[name] = {**row, "error": str(err).splitlines()[0][:200]}
            continue
        if masked:  # unmasked rows attend to the padding too: nothing to compare
            for what, ref, out in zip(("out", "q_grad", "k_grad", "v_grad"), reference, got):
                keep = torch.cat([ref[b, :, :n].flatten() for b, n in enumerate(frames)])
                same = torch.cat([out.float()[b, :, :n].flatten() for b, n in enumerate(frames)])
                row[f"{what}_max_rel_diff"] = float((same - keep).abs().max() / keep.abs().max())
        if cuda:
            def step(backend=backend, masked=masked) -> None:
                grads(backend, masked, args.attn_dropout, q0.dtype)
            row["gpu_ms"] = round(gpu_ms(step, args.iters), 3)
            if peak:
                row["of_peak"] = round(flop / (row["gpu_ms"] / 1000) / peak, 3)
            row["kernels"] = top_kernels(step)
        rows[name] = row
    return {"shape": {"batch": args.batch, "heads": heads, "frames": total,
                      "head_dim": head_dim, "shortest_clip": frames[-1],
                      "dropout_p": args.attn_dropout, "dtype": str(q0.dtype)},
            "tflop": round(flop / 1e12, 4), "rows": rows}


#: one XLS-R layer's variants for --parts layer: (dropout, attention_dropout, float8 fc1/fc2,
#: inductor options the layer is compiled with)
LAYER_VARIANTS = {
    "pretraining_dropouts": (0.1, 0.1, False, {}),   # what the step trained with up to round 16
    "seed_dropouts": (0.0, 0.0, False, {}),          # the seed's fine-tuning dropouts (HF's XLS-R)
    "seed_dropouts_float8": (0.0, 0.0, True, {}),    # + fc1, fc2 in float8 (cvasr.speedups.float8_ffn)
    "pretraining_dropouts_float8": (0.1, 0.1, True, {}),
    # float8 without torchao's inner-dimension padding (float8_config pads): the frames x clips
    # must then be a multiple of 16 already (--frames 336)
    "seed_dropouts_float8_unpadded": (0.0, 0.0, "unpadded", {}),
    # inductor's tuning, as torch.compile's modes set it (torch._inductor.list_mode_options):
    # the fused kernels' launch configurations searched by coordinate descent; then that and
    # every GEMM timed against inductor's Triton templates, whose epilogues can take in the bias,
    # GELU and residual adds that run as kernels of their own after cuBLAS's
    "seed_dropouts_coordinate_descent": (0.0, 0.0, False, {"coordinate_descent_tuning": True}),
    "seed_dropouts_max_autotune": (0.0, 0.0, False, {"max_autotune": True,
                                                      "coordinate_descent_tuning": True}),
    # round 19: each layer norm's backward is one mix-order reduction kernel whose weight and
    # bias gradients end in two torch sums over its splits' partial sums (ATen's reduce_kernel,
    # 10.6 us each in the step's trace, 23 us in this bench, at the default split of 16 rows);
    # fewer, larger splits, or the layer norm backward as separate row and column reductions
    # (mix-order off)
    **{f"seed_dropouts_mix_order_split{n}": (
        0.0, 0.0, False, {"triton.mix_order_reduction_split_size": n}) for n in (32, 64, 128)},
    "seed_dropouts_no_mix_order": (0.0, 0.0, False, {"triton.mix_order_reduction": False}),
    # Hopper's programmatic dependent launch: a Triton kernel's launch overlaps the end of the
    # one before (the step runs ~1950 kernels, ~1 us apart inside its CUDA graphs)
    "seed_dropouts_pdl": (0.0, 0.0, False, {"triton.enable_pdl": True}),
    # inductor's combo kernels: independent kernels (the weights' casts to bf16, their
    # gradients' casts back, the bias gradients) launched as one; fewer of the layer's 79
    "seed_dropouts_combo_kernels": (0.0, 0.0, False, {"combo_kernels": True}),
}


def bench_layer(args: argparse.Namespace) -> dict:
    """One of XLS-R's transformer layers (s3prl's, pre-norm, 1024 wide, FFN 4096, 16 heads), its
    forward + backward compiled by inductor as the step compiles it, under bf16 autocast, at the
    step's batch shape with a key padding mask: GPU ms per variant (LAYER_VARIANTS) and x 24 for
    the step; the float8 rows' output and fc1 weight gradient against the bf16 row of the same
    dropouts (dropouts 0: the same numbers but for float8; 0.1: other masks, no comparison)."""
    from s3prl.upstream.wav2vec2.wav2vec2_model import TransformerSentenceEncoderLayer

    from cvasr.models.frontend import set_layer_dropouts
    from cvasr.speedups.float8_ffn import float8_config, layer_ffn_to_float8

    dim, ffn, heads = 1024, 4096, 16
    frames = torch.linspace(args.frames, round(args.frames * 0.95), args.batch).round().long()
    padding = (torch.arange(args.frames)[None, :] >= frames[:, None]).cuda()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(args.frames, args.batch, dim, generator=g).cuda()
    grad_out = torch.randn(x0.shape, generator=g).cuda()
    torch.manual_seed(0)
    base = TransformerSentenceEncoderLayer(dim, ffn, heads, dropout=0.1, attention_dropout=0.1,
                                           activation_dropout=0.0, activation_fn="gelu",
                                           layer_norm_first=True).cuda().train()
    # forward + backward FLOPs of the layer's GEMMs and attention (2 a multiply-add, x3)
    tokens = int(frames.sum())
    flop = 3 * (2 * tokens * (4 * dim * dim + 2 * dim * ffn)
                + 4 * args.batch * args.frames * args.frames * dim)
    peak = peak_flops(torch.cuda.get_device_name(0))
    rows: dict = {}
    outputs: dict = {}
    variants = {k: v for k, v in LAYER_VARIANTS.items()
                if not args.layer_variants or k in args.layer_variants}
    for name, (dropout, attention_dropout, float8, inductor) in variants.items():
        layer = copy.deepcopy(base)
        set_layer_dropouts(layer, dropout, attention_dropout)
        if float8:
            config = float8_config()
            if float8 == "unpadded":
                config = dataclasses.replace(config, pad_inner_dim=False)
            layer_ffn_to_float8(layer, config)
        torch._dynamo.reset()
        forward = torch.compile(lambda x, layer=layer: layer(
            x, self_attn_padding_mask=padding, need_weights=False)[0],
            options=inductor or None)

        def step(layer=layer, forward=forward) -> torch.Tensor:
            layer.zero_grad(set_to_none=True)
            x = x0.detach().requires_grad_()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = forward(x)
            out.backward(grad_out.to(out.dtype))
            return out.detach().float()

        row: dict = {"dropout": dropout, "attention_dropout": attention_dropout,
                     "float8_ffn": float8, "inductor": inductor}
        t0 = time.perf_counter()
        try:
            out = step()
        except Exception as err:  # noqa: BLE001 - one variant failing must not lose the others
            rows[name] = {**row, "error": f"{type(err).__name__}: {str(err).splitlines()[-1][:200]}"}
            print(f"  {name}: {rows[name]['error']}", flush=True)
            continue
        row["first_call_s"] = round(time.perf_counter() - t0, 1)
        outputs[name] = (out, layer.fc1.weight.grad.detach().float().clone())
        # the GPU's own time with the CPU ahead (gpu_ms), and the kernels' sum
        row["gpu_ms"] = round(gpu_ms(step, args.iters, cpu_ahead_ms=200.0), 3)
        row["step_ms_24_layers"] = round(24 * row["gpu_ms"], 2)
        if peak:
            row["of_peak"] = round(flop / (row["gpu_ms"] / 1000) / peak, 3)
        kernels = top_kernels(step, count=10_000)
        row["kernels"] = kernels[:5]
        row["all_kernels"] = kernels  # every kernel a layer runs: what a variant fused or split
        row["kernel_launches"] = sum(k["calls"] for k in kernels)
        row["kernel_ms"] = round(sum(k["us"] for k in kernels) / 1000, 3)
        row["triton_ms"] = round(sum(k["us"] for k in kernels
                                     if k["name"].startswith("triton_")) / 1000, 3)
        aten_reduce = [k for k in kernels if "reduce_kernel" in k["name"]]  # ATen's, not Triton's
        row["aten_reduce_kernels"] = {"calls": sum(k["calls"] for k in aten_reduce),
                                      "us": round(sum(k["us"] for k in aten_reduce), 1)}
        rows[name] = row
        print(f"  {name}: {row['gpu_ms']} ms a layer ({row['kernel_ms']} ms of kernels, "
              f"Triton's {row['triton_ms']}), {row['kernel_launches']} kernels, ATen "
              f"reductions {row['aten_reduce_kernels']['calls']} x, "
              f"{row['aten_reduce_kernels']['us']} us", flush=True)
    for name, (dropout, _, float8, inductor) in variants.items():
        # dropouts 0 draw no masks: a variant's numbers differ from the plain bf16 row's only by
        # what it changes (float8, or the tuned kernels' summation order)
        if dropout == 0.0 and (float8 or inductor) and name in outputs and "seed_dropouts" in outputs:
            for i, what in enumerate(("out", "fc1_grad")):
                got, want = outputs[name][i], outputs["seed_dropouts"][i]
                rows[name][f"{what}_rel_err"] = round(float((got - want).norm() / want.norm()), 5)
    return {"shape": {"batch": args.batch, "frames": args.frames, "tokens": tokens, "dim": dim,
                      "ffn": ffn, "heads": heads}, "tflop": round(flop / 1e12, 4), "rows": rows}


#: what --parts can time
PARTS = {"ctc": bench_ctc, "specaug": bench_specaug, "pos_conv": bench_pos_conv,
         "attention": bench_attention, "layer": bench_layer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--labels", type=int, default=60)
    parser.add_argument("--vocab", type=int, default=46)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--busy-ms", type=float, default=30.0)
    parser.add_argument("--attn-dropout", type=float, default=0.1,
                        help="attention dropout while timing (XLS-R trains with 0.1)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--layer-variants", nargs="+", choices=list(LAYER_VARIANTS),
                        default=None, help="--parts layer: these variants only (default all)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" /
                        "step_kernels.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    result = {"benchmark": "step_kernels", "git_revision": git_revision(),
              "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(),
              **{part: PARTS[part](args) for part in args.parts}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['gpu']}, torch {result['torch']}, cuDNN {result['cudnn']}")
    for part in args.parts:
        print(f"\n{part} {result[part]['shape']}")
        for name, row in result[part]["rows"].items():
            print(f"  {name:<14} " + "  ".join(f"{k} {v}" for k, v in row.items()
                                                if k != "kernels"))
            for kernel in row.get("kernels", []):
                print(f"      {kernel['us']:9.1f} us {kernel['calls']:3d}x  {kernel['name']}")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
