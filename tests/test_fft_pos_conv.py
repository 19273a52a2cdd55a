"""The positional convolution through FFTs (cvasr.speedups.fft_pos_conv) against s3prl's block
(Conv1d with weight norm, SamePad, GELU) run by PyTorch, in float64: values and gradients."""

from __future__ import annotations

import pytest
import torch

from cvasr.speedups.fft_pos_conv import (fft_grouped_conv, fft_length, fft_positional_conv)


def _block(channels: int, kernel: int, groups: int, seed: int = 0) -> torch.nn.Sequential:
    """s3prl's make_conv_pos block of these sizes, random weights, in float64."""
    from s3prl.upstream.wav2vec2.wav2vec2_model import make_conv_pos

    torch.manual_seed(seed)
    block = make_conv_pos(channels, kernel, groups).double()
    with torch.no_grad():  # a bias that is not zero, and a weight norm not at its init
        block[0].bias.normal_()
        block[0].weight_g.mul_(torch.rand_like(block[0].weight_g) + 0.5)
    return block


@pytest.mark.parametrize("frames,kernel,groups", [(45, 16, 4), (64, 16, 4), (7, 16, 2),
                                                  (33, 15, 4), (1, 8, 2)])
def test_values_and_gradients_are_the_convolutions(frames: int, kernel: int, groups: int) -> None:
    block = _block(32, kernel, groups)
    x = torch.randn(3, frames, 32, dtype=torch.float64)
    x[2, frames // 2:] = 0  # a shorter clip's masked frames
    x.requires_grad_(True)
    want = block(x.transpose(1, 2)).transpose(1, 2)
    grad = torch.randn_like(want)
    want_grads = torch.autograd.grad(want, [x, *block.parameters()], grad)
    got = fft_positional_conv(block, x)
    got_grads = torch.autograd.grad(got, [x, *block.parameters()], grad)
    assert got.shape == want.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    names = ["x"] + [n for n, _ in block.named_parameters()]  # bias, weight_g, weight_v
    for name, g, w in zip(names, got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9, msg=name)


def test_bf16_input_gives_bf16_close_to_the_float32_convolution() -> None:
    block = _block(32, 16, 4).float()
    x = torch.randn(2, 40, 32).bfloat16()
    got = fft_positional_conv(block, x)
    want = block(x.float().transpose(1, 2)).transpose(1, 2)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)


def test_transform_length_leaves_no_wraparound() -> None:
    assert fft_length(250, 128) == 384 and fft_length(1, 128) == 128
    assert all(fft_length(t, 128) >= t + 127 and fft_length(t, 128) % 32 == 0
               for t in range(1, 600))


def test_operator_registrations_pass_torch_opcheck() -> None:
    """Fake (meta) shapes, autograd registration and schema, as torch.library checks them."""
    block = _block(16, 8, 2)
    x = torch.randn(2, 12, 16, dtype=torch.float64, requires_grad=True)
    weight = block[0].weight_v.detach().clone().requires_grad_(True)
    bias = block[0].bias.detach().clone().requires_grad_(True)
    torch.library.opcheck(fft_grouped_conv, (x, weight, bias, 2))


def test_one_compiled_graph_over_lengths() -> None:
    """Under torch.compile the operator is one opaque call: no graph break, one graph for every
    length (dynamo and AOT autograd, as a CPU test can run them)."""
    from torch._dynamo.utils import counters

    block = _block(16, 8, 2)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(lambda x: fft_positional_conv(block, x), backend="aot_eager",
                             fullgraph=True, dynamic=True)
    for frames in (20, 33, 64):
        x = torch.randn(2, frames, 16, dtype=torch.float64, requires_grad=True)
        got = compiled(x)
        got.sum().backward()
        torch.testing.assert_close(got, block(x.transpose(1, 2)).transpose(1, 2))
    assert counters["stats"]["unique_graphs"] == 1


def test_inductor_runs_it_on_a_transposed_input() -> None:
    """Inductor checks each output's strides against the fake kernel's: the compiled transformer
    hands the operator a transposed (B, T, C) view, whose strides `empty_like(x)` copied while
    the real outputs are contiguous (the GPU run in bench/results/step_fft_b664406 failed so).
    Inductor's caches are off: its FX graph cache keys do not cover a custom operator's fake."""
    block = _block(16, 8, 2).float()
    torch._dynamo.reset()
    with torch._inductor.config.patch(force_disable_caches=True):
        compiled = torch.compile(lambda y: fft_positional_conv(block, y.transpose(1, 2)),
                                 backend="inductor", fullgraph=True)
        y = torch.randn(2, 16, 12, requires_grad=True)
        got = compiled(y)
        (got * torch.arange(16.0)).sum().backward()
    y_eager = y.detach().clone().requires_grad_(True)
    want = block(y_eager).transpose(1, 2)
    (want * torch.arange(16.0)).sum().backward()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y.grad, y_eager.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dim", [0, 1, 2, None])
def test_conv_weight_is_the_weight_norm_hooks(dim: int | None) -> None:
    """conv_weight spells the hook's weight norm out (g * v / |v|): the hook's own weight for
    every dim weight_norm takes, None (one norm over the whole tensor) among them."""
    from torch.nn.utils.weight_norm import WeightNorm

    from cvasr.speedups.fft_pos_conv import conv_weight

    torch.manual_seed(0)
    conv = torch.nn.utils.weight_norm(torch.nn.Conv1d(8, 8, 5, groups=2).double(), dim=dim)
    hook = next(h for h in conv._forward_pre_hooks.values() if isinstance(h, WeightNorm))
    torch.testing.assert_close(conv_weight(conv), hook.compute_weight(conv), rtol=1e-12,
                               atol=1e-14)
