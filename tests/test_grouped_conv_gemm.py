"""The positional convolution as a GEMM (cvasr.speedups.grouped_conv_gemm) against PyTorch's own
grouped convolution: outputs and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cvasr.speedups.grouped_conv_gemm import grouped_conv1d_gemm


@pytest.mark.parametrize("kernel,padding", [(128 // 8, 8), (5, 2), (4, 0)])
def test_gemm_gives_conv1d_outputs_and_gradients(kernel: int, padding: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 32, 21, dtype=torch.float64)
    weight = torch.randn(32, 32 // 4, kernel, dtype=torch.float64)
    bias = torch.randn(32, dtype=torch.float64)
    got, want = ([t.clone().requires_grad_() for t in (x, weight, bias)] for _ in range(2))
    out = grouped_conv1d_gemm(*got, padding=padding, groups=4)
    ref = F.conv1d(*want, padding=padding, groups=4)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(ref)
    out.backward(grad)
    ref.backward(grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.grad, b.grad)


def test_a_weight_that_does_not_fit_the_groups_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit 32 channels in 4 groups"):
        grouped_conv1d_gemm(torch.zeros(1, 32, 5), torch.zeros(32, 6, 3), None, 1, 4)
