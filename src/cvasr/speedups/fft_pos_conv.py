"""wav2vec 2.0's positional convolution through FFTs: `frontend_conf: {pos_conv_impl: fft}`.

Why: the positional convolution (1024 channels, kernel 128, 16 groups) is about 3% of XLS-R's
FLOPs but took 9.6 ms of a compiled training step's 63.8 ms of GPU time on an H200: cuDNN ran it
as 16 per-group kernels in each direction (bench/NOTES.md, "Where the time goes now"). A kernel
of 128 taps is where convolution by FFT pays: along time each channel is transformed once, and
what is left is, per frequency bin, a (batch x 64) by (64 x 64) complex product per group, a few
GFLOP for the whole step.

`fft_grouped_conv` computes, for x of shape (B, T, C) (the transformer's layout, no transposes)
and a weight (C, C / groups, K), what `Conv1d(padding=K // 2, groups=groups)` followed by
s3prl's `SamePad` gives (the first T outputs), in float32 for a bf16 or fp16 input (float64 for
a float64 one), the result in the input's dtype. It is a custom operator with its own backward
(also an operator), so torch.compile treats both as opaque calls: inductor never sees the
complex tensors inside.

The transform length n is at least T + K - 1, so the circular convolution the FFT computes is
the linear one: no output frame sees another's input, and frames past T are zeros, as
convolution padding makes them (tests/test_fft_pos_conv.py checks values and gradients against
PyTorch's convolution in float64).
"""

from __future__ import annotations

import torch

#: the transform length is rounded up to a multiple of this (cuFFT is fast on small factors)
FFT_MULTIPLE = 32


def fft_length(frames: int, kernel: int) -> int:
    """The transform length for `frames` input frames and a kernel of `kernel` taps: the shortest
    multiple of FFT_MULTIPLE with no wrap-around (at least frames + kernel - 1)."""
    full = frames + kernel - 1
    return -(-full // FFT_MULTIPLE) * FFT_MULTIPLE


def _working_dtype(x: torch.Tensor) -> torch.dtype:
    """float32, or float64 for a float64 input (the tests' oracle runs there)."""
    return torch.promote_types(x.dtype, torch.float32)


def _spectra(x: torch.Tensor, weight: torch.Tensor, groups: int, n: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T, C) and weight (C, C/g, K) -> their half spectra arranged for batched products:
    X (g, F, B, C/g) and U (g, F, C/g in, C/g out), U the spectrum of the time-reversed kernel
    (a convolution's kernel, where Conv1d correlates)."""
    b, _, c = x.shape
    per = c // groups
    work = _working_dtype(x)
    spec_x = torch.fft.rfft(x.to(work), n=n, dim=1)  # (B, F, C)
    freqs = spec_x.size(1)
    spec_x = spec_x.view(b, freqs, groups, per).permute(2, 1, 0, 3)
    spec_u = torch.fft.rfft(weight.to(work).flip(-1), n=n, dim=-1)  # (C out, C/g in, F)
    spec_u = spec_u.view(groups, per, per, freqs).permute(0, 3, 2, 1)
    return spec_x, spec_u


def _offset(kernel: int) -> int:
    """Where Conv1d's first output (padding kernel // 2) sits in the full linear convolution."""
    return kernel - 1 - kernel // 2


@torch.library.custom_op("cvasr::fft_grouped_conv", mutates_args=())
def fft_grouped_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     groups: int) -> torch.Tensor:
    """Grouped Conv1d (padding K // 2) over x (B, T, C), its first T frames, + bias."""
    b, frames, c = x.shape
    kernel = weight.size(-1)
    n = fft_length(frames, kernel)
    spec_x, spec_u = _spectra(x, weight, groups, n)
    spec_y = torch.matmul(spec_x, spec_u)  # (g, F, B, C/g out)
    spec_y = spec_y.permute(2, 1, 0, 3).reshape(b, -1, c)
    start = _offset(kernel)
    y = torch.fft.irfft(spec_y, n=n, dim=1)[:, start:start + frames]
    return (y + bias.to(y.dtype)).to(x.dtype).contiguous()


# The fake kernels give contiguous outputs, as the real ones do whatever the inputs' strides:
# inductor checks each output's strides against its fake (a transposed x, as the compiled
# transformer passes it, failed that check while `empty_like(x)` copied x's strides).
@fft_grouped_conv.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int) -> torch.Tensor:
    return x.new_empty(x.shape)


@torch.library.custom_op("cvasr::fft_grouped_conv_backward", mutates_args=())
def fft_grouped_conv_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                              groups: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of fft_grouped_conv with respect to x, weight and bias, given the output's
    gradient `grad` (B, T, C): the adjoint products in the frequency domain (conjugates), the
    same transform length as the forward, so again no wrap-around."""
    b, frames, c = x.shape
    kernel = weight.size(-1)
    per = c // groups
    n = fft_length(frames, kernel)
    # the spectra again rather than saved by the forward: two transforms cost less than keeping
    # complex copies of x and the weight (each twice their real size) alive until the backward
    spec_x, spec_u = _spectra(x, weight, groups, n)
    # the output's gradient placed where the forward cut its frames from the full convolution
    start = _offset(kernel)
    work = _working_dtype(x)
    full = torch.zeros(b, n, c, dtype=work, device=grad.device)
    full[:, start:start + frames] = grad.to(work)
    spec_g = torch.fft.rfft(full, dim=1)
    freqs = spec_g.size(1)
    spec_g = spec_g.view(b, freqs, groups, per).permute(2, 1, 0, 3)  # (g, F, B, C/g out)
    spec_gx = torch.matmul(spec_g, spec_u.conj().transpose(-1, -2))  # (g, F, B, C/g in)
    grad_x = torch.fft.irfft(spec_gx.permute(2, 1, 0, 3).reshape(b, freqs, c), n=n,
                             dim=1)[:, :frames]
    spec_gu = torch.matmul(spec_x.conj().transpose(-1, -2), spec_g)  # (g, F, C/g in, C/g out)
    grad_u = torch.fft.irfft(spec_gu.permute(0, 3, 2, 1).reshape(c, per, freqs), n=n,
                             dim=-1)[..., :kernel]
    grad_bias = grad.to(work).sum((0, 1))
    return (grad_x.to(x.dtype).contiguous(), grad_u.flip(-1).to(weight.dtype).contiguous(),
            grad_bias.to(weight.dtype))


@fft_grouped_conv_backward.register_fake
def _(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
      groups: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return x.new_empty(x.shape), weight.new_empty(weight.shape), weight.new_empty(weight.size(0))


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, groups = inputs
    ctx.save_for_backward(x, weight)
    ctx.groups = groups
    ctx.bias_dtype = bias.dtype


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    grad_x, grad_w, grad_b = fft_grouped_conv_backward(grad, x, weight, ctx.groups)
    return grad_x, grad_w, grad_b.to(ctx.bias_dtype), None


fft_grouped_conv.register_autograd(_backward, setup_context=_setup_context)


def supports(conv: torch.nn.Conv1d) -> bool:
    """Whether fft_grouped_conv computes this convolution: stride and dilation 1, padding
    K // 2 (wav2vec 2.0's positional convolution), with a bias."""
    return (conv.bias is not None and conv.stride == (1,) and conv.dilation == (1,)
            and conv.padding == (conv.kernel_size[0] // 2,))


def conv_weight(conv: torch.nn.Conv1d) -> torch.Tensor:
    """The convolution's effective weight, its weight norm applied (s3prl's `weight_norm` hook,
    which sets `.weight` only inside the module's own forward, or a parametrization). The hook's
    norm is spelled out as plain ops, g * v / |v|, rather than the hook's `_weight_norm`: torch
    has no decomposition for that op's backward, so in a compiled graph it stayed a call to
    aten's kernel for a norm over all but the last dim, 0.84 ms a step on an H200 where
    inductor's own reduction takes microseconds (bench/NOTES.md, round 15)."""
    from torch.nn.utils.weight_norm import WeightNorm

    for hook in conv._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm) and hook.name == "weight":
            g, v = getattr(conv, hook.name + "_g"), getattr(conv, hook.name + "_v")
            # the norm over every dim but hook.dim; torch's dim -1 (weight_norm's dim=None): all
            others = [d for d in range(v.dim()) if hook.dim == -1 or d != hook.dim]
            return v * (g / torch.linalg.vector_norm(v, dim=others, keepdim=True))
    return conv.weight


def fft_positional_conv(pos_conv: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """s3prl's `pos_conv` block (Conv1d with weight norm, SamePad, GELU) over x (B, T, C) through
    fft_grouped_conv: the block's numbers, up to float32 rounding."""
    conv, activation = pos_conv[0], pos_conv[2]
    return activation(fft_grouped_conv(x, conv_weight(conv), conv.bias, conv.groups))
