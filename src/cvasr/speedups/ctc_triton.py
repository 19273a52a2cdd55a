"""CTC loss without host syncs: the alpha and beta recursions as Triton kernels.

Why: PyTorch's CUDA CTC copies its host-side bookkeeping to the GPU with blocking copies (8 host
syncs a training step), and cuDNN's CTC, reached exactly through certain-blank padding, still
holds the CPU until the GPU's queue is done (bench/NOTES.md, round 5), so in either the CPU
cannot issue the backward while the GPU runs the forward. Here every length and label stays on
the GPU; the host supplies only shapes (the batch's longest target, which the sync-free step
keeps on the host). One Triton program a clip runs the recursion over its frames, one state
per lane (2 x labels + 1 states, blanks between labels); the rest is ordinary tensor code
(gathering each state's log-probability, the log-likelihood, the posteriors scattered back to
the tokens), so autograd needs no host value either.

The rows other lanes wrote are read after a barrier and from L2 (`.cg`), not from a line the
SM may hold from before. Status: tested against `F.ctc_loss` on the CPU through Triton's
interpreter (TRITON_INTERPRET=1, tests/test_ctc_triton.py). Timed on an H200 (bench/NOTES.md,
round 6): no host sync, but 1.6 ms of kernels against PyTorch's 0.95, and the eager training
step no faster with it; with the transformer compiled (round 7, with the sync-free
SpecAugment) the step was 18% slower. With CUDA graphs and no other sync in the step (round 15)
the CPU queues steps ahead and the step is 19% faster than with CUDA graphs alone: the XLS-R
config trains with it (`model_conf: {ctc_impl: triton}`); the default is PyTorch's.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

#: the kernels loop over the batch's frames rounded up to this: a compile-time bound (Triton
#: compiles a kernel per value), so one compiled kernel serves 32 batch lengths
FRAMES_MULTIPLE = 32


@triton.jit
def _logaddexp3(a, b, c):
    top = tl.maximum(tl.maximum(a, b), c)
    safe = tl.where(top == float("-inf"), 0.0, top)
    return safe + tl.log(tl.exp(a - safe) + tl.exp(b - safe) + tl.exp(c - safe))


@triton.jit
def _alpha_kernel(lpe_ptr, skip_ptr, frames_ptr, labels_ptr, alpha_ptr, batch, states_max,
                  TOTAL: tl.constexpr, BLOCK: tl.constexpr):
    """alpha[t, b, s] = log P(the first s+1 states in frames 0..t), for clip b = program_id.
    The loop runs over TOTAL frames (the batch's, rounded up: one compiled kernel serves 32
    batch lengths), reading and writing only the clip's own."""
    b = tl.program_id(0)
    frames = tl.load(frames_ptr + b)
    states = 2 * tl.load(labels_ptr + b) + 1
    s = tl.arange(0, BLOCK)
    valid = s < states
    skip = tl.load(skip_ptr + b * states_max + s, mask=valid, other=0) != 0
    row = batch * states_max
    base = b * states_max
    first = tl.load(lpe_ptr + base + s, mask=valid & (s < 2), other=float("-inf"))
    tl.store(alpha_ptr + base + s, first, mask=(s < states_max) & (frames > 0))
    for t in range(1, TOTAL):
        tl.debug_barrier()  # the previous frame's row, written by other lanes, is complete
        live = valid & (t < frames)
        prev = alpha_ptr + (t - 1) * row + base
        a1 = tl.load(prev + s, mask=live, other=float("-inf"), cache_modifier=".cg")
        a2 = tl.load(prev + s - 1, mask=live & (s >= 1), other=float("-inf"), cache_modifier=".cg")
        a3 = tl.load(prev + s - 2, mask=live & skip, other=float("-inf"), cache_modifier=".cg")
        emit = tl.load(lpe_ptr + t * row + base + s, mask=live, other=float("-inf"))
        tl.store(alpha_ptr + t * row + base + s, _logaddexp3(a1, a2, a3) + emit,
                 mask=(s < states_max) & (t < frames))


@triton.jit
def _beta_kernel(lpe_ptr, skip_ptr, frames_ptr, labels_ptr, beta_ptr, batch, states_max,
                 TOTAL: tl.constexpr, BLOCK: tl.constexpr):
    """beta[t, b, s] = log P(states s.. to the end in frames t..), frame t's own included."""
    b = tl.program_id(0)
    frames = tl.load(frames_ptr + b)
    states = 2 * tl.load(labels_ptr + b) + 1
    s = tl.arange(0, BLOCK)
    valid = s < states
    # state s may jump to s + 2 when that is a label unlike the one at s
    jump = tl.load(skip_ptr + b * states_max + s + 2, mask=(s + 2) < states, other=0) != 0
    row = batch * states_max
    base = b * states_max
    last = frames - 1
    for i in range(0, TOTAL):
        t = TOTAL - 1 - i
        tl.debug_barrier()  # the next frame's row, written by other lanes, is complete
        nxt = beta_ptr + (t + 1) * row + base
        inner = t < last
        b1 = tl.load(nxt + s, mask=valid & inner, other=float("-inf"), cache_modifier=".cg")
        b2 = tl.load(nxt + s + 1, mask=((s + 1) < states) & inner,
                     other=float("-inf"), cache_modifier=".cg")
        b3 = tl.load(nxt + s + 2, mask=jump & inner, other=float("-inf"), cache_modifier=".cg")
        emit = tl.load(lpe_ptr + t * row + base + s, mask=valid & (t <= last),
                       other=float("-inf"))
        # the last frame may end in the last label or the blank after it
        ending = tl.where(s >= states - 2, 0.0, float("-inf"))
        value = tl.where(t == last, ending, _logaddexp3(b1, b2, b3)) + emit
        tl.store(beta_ptr + t * row + base + s, value, mask=(s < states_max) & (t <= last))


def _states(targets: torch.Tensor, max_labels: int, blank: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The blank-interleaved state labels (B, 2 L + 1) and where a state may be reached from two
    states back (a label unlike the one before it), from padded targets (B, >= L) on the GPU."""
    batch = targets.size(0)
    labels = targets[:, :max_labels].long()
    labels = torch.where(labels < 0, torch.full_like(labels, blank), labels)  # padding ids
    ext = torch.full((batch, 2 * max_labels + 1), blank, dtype=torch.long,
                     device=targets.device)
    ext[:, 1::2] = labels
    skip = torch.zeros_like(ext, dtype=torch.int32)
    if max_labels > 1:
        skip[:, 3::2] = (labels[:, 1:] != labels[:, :-1]).int()
    return ext, skip


class _TritonCTC(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_probs: torch.Tensor, targets: torch.Tensor, frames: torch.Tensor,
                labels: torch.Tensor, max_labels: int, blank: int, zero_infinity: bool
                ) -> torch.Tensor:
        total, batch, _ = log_probs.shape
        ext, skip = _states(targets, max_labels, blank)
        states_max = ext.size(1)
        lpe = log_probs.gather(2, ext[None].expand(total, -1, -1)).contiguous()  # (T, B, S)
        frames32, labels32 = frames.int().contiguous(), labels.int().contiguous()
        alpha = torch.full_like(lpe, float("-inf"))
        block = triton.next_power_of_2(states_max)
        padded = triton.cdiv(total, FRAMES_MULTIPLE) * FRAMES_MULTIPLE
        _alpha_kernel[(batch,)](lpe, skip, frames32, labels32, alpha, batch, states_max,
                                TOTAL=padded, BLOCK=block)
        last = (frames.long() - 1).clamp(min=0)
        final = alpha.gather(0, last.view(1, batch, 1).expand(1, batch, states_max))[0]
        s = torch.arange(states_max, device=log_probs.device)
        n_states = 2 * labels.long() + 1
        ends = (s[None] >= n_states[:, None] - 2) & (s[None] < n_states[:, None])
        log_z = torch.logsumexp(torch.where(ends, final, float("-inf")), dim=1)
        losses = -log_z
        if zero_infinity:
            losses = torch.where(torch.isinf(losses), torch.zeros_like(losses), losses)
        ctx.save_for_backward(lpe, alpha, skip, frames32, labels32, ext, log_z)
        ctx.shape, ctx.zero_infinity, ctx.block = log_probs.shape, zero_infinity, block
        ctx.padded = padded
        return losses

    @staticmethod
    def backward(ctx, grad_losses: torch.Tensor):
        lpe, alpha, skip, frames32, labels32, ext, log_z = ctx.saved_tensors
        total, batch, vocab = ctx.shape
        beta = torch.full_like(lpe, float("-inf"))
        _beta_kernel[(batch,)](lpe, skip, frames32, labels32, beta, batch, ext.size(1),
                               TOTAL=ctx.padded, BLOCK=ctx.block)
        # d loss_b / d log_probs[t, b, k] = -sum over states s labelled k of their posterior
        posterior = torch.exp(alpha + beta - lpe - log_z[None, :, None])
        finite = torch.isfinite(log_z)[None, :, None]
        weight = grad_losses.to(posterior.dtype)[None, :, None]
        if ctx.zero_infinity:
            contribution = torch.where(finite, -posterior * weight, 0.0)
        else:  # an unalignable clip's gradient is undefined, as PyTorch's is (NaN)
            contribution = -posterior * weight
        grad = torch.zeros(total, batch, vocab, dtype=lpe.dtype, device=lpe.device)
        grad.scatter_add_(2, ext[None].expand(total, -1, -1), contribution)
        return grad, None, None, None, None, None, None


def triton_ctc_loss(log_probs: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
                    target_lengths: torch.Tensor, max_target_length: int, blank: int = 0,
                    zero_infinity: bool = True) -> torch.Tensor:
    """Per-clip CTC losses (B,), as `F.ctc_loss(..., reduction="none")`.

    `log_probs` (T, B, V) float32 log-softmax output; `targets` (B, >= max_target_length) padded
    labels (any padding value; negative ones read as blank), `input_lengths` and
    `target_lengths` (B,) on log_probs' device; `max_target_length` the longest target, a host
    integer (a shape, so no sync). The gradient is the true derivative with respect to the
    log-probabilities (PyTorch's own CTC returns one that is right only after log_softmax's
    backward; through log_softmax the two agree).
    """
    return _TritonCTC.apply(log_probs, targets, input_lengths, target_lengths,
                            int(max_target_length), blank, zero_infinity)
