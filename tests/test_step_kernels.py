"""The measured alternatives of bench/step_kernels.py against PyTorch's own ops: CTC with
certain-blank padding gives the losses and gradients of the true lengths (oracle: F.ctc_loss
with them; on the CPU both run PyTorch's native CTC, on a GPU the padded one runs cuDNN's), and
the grouped convolution as a GEMM gives F.conv1d's outputs and gradients, and the attention
bench's key padding mask gives each clip the attention over its own frames alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from step_kernels import cudnn_takes, grouped_conv1d_gemm, padded_ctc_loss  # noqa: E402

# clip 2 repeats a label (needs a blank between), clip 3 cannot be aligned in its 3 frames
INPUT_LENGTHS = [12, 7, 9, 3]
TARGETS = [[1, 2, 3], [4, 4, 2], [5, 1, 5, 1], [1, 2, 1, 2]]


def _losses_and_grads(padded: bool) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    logits = torch.randn(max(INPUT_LENGTHS), len(INPUT_LENGTHS), 6, dtype=torch.float64,
                         requires_grad=True)
    log_probs = logits.log_softmax(-1)
    targets = torch.tensor([t for clip in TARGETS for t in clip], dtype=torch.int32)
    target_lengths = [len(clip) for clip in TARGETS]
    if padded:
        losses = padded_ctc_loss(log_probs, targets, INPUT_LENGTHS, target_lengths)
    else:
        losses = F.ctc_loss(log_probs, targets, INPUT_LENGTHS, target_lengths,
                            reduction="none", zero_infinity=True)
    (losses * torch.arange(1, 5)).sum().backward()  # a different weight a clip
    assert logits.grad is not None
    return losses.detach(), logits.grad


def test_padded_ctc_gives_the_losses_and_gradients_of_the_true_lengths() -> None:
    losses, grads = _losses_and_grads(padded=True)
    want_losses, want_grads = _losses_and_grads(padded=False)
    assert torch.isfinite(want_losses[:3]).all() and want_losses[3] == 0  # zero_infinity
    torch.testing.assert_close(losses, want_losses, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads, want_grads, rtol=1e-12, atol=1e-12)
    # the padded frames of each clip take no gradient
    for b, n in enumerate(INPUT_LENGTHS):
        assert not grads[n:, b].any()


def test_cudnn_conditions_are_not_met_on_the_cpu() -> None:
    log_probs = torch.zeros(5, 1, 3).log_softmax(-1)
    assert not cudnn_takes(log_probs, torch.tensor([1], dtype=torch.int32), [1])



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


def test_top_kernels_names_the_costliest_ops_first() -> None:
    """On the CPU the profiler's ops stand in for kernels: a large matmul outweighs a small add."""
    from step_kernels import top_kernels

    a, b = torch.randn(400, 400), torch.randn(400, 400)
    rows = top_kernels(lambda: (a @ b, a[:2] + 1), count=2)
    assert rows[0]["name"] in ("aten::mm", "aten::matmul") and rows[0]["calls"] == 1
    assert rows[0]["us"] >= rows[1]["us"] > 0 and len(rows) == 2


def test_the_key_padding_mask_gives_each_clip_attention_over_its_own_frames() -> None:
    """Oracle: each clip's attention computed on its frames alone, without a mask; the padded
    keys get no gradient. On the CPU the math backend runs, as bench_attention's reference."""
    from step_kernels import key_padding_mask, masked_attention

    frames, total = [7, 5, 2], 7
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, total, 4, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    mask = key_padding_mask(frames, total)
    assert mask.shape == (3, 1, 1, total)
    assert mask[1, 0, 0].tolist() == [True] * 5 + [False] * 2
    out = masked_attention(q, k, v, mask, "math", 0.0)
    out.sum().backward()
    for b, n in enumerate(frames):
        alone = F.scaled_dot_product_attention(q[b:b + 1], k[b:b + 1, :, :n], v[b:b + 1, :, :n])
        torch.testing.assert_close(out[b:b + 1], alone)
        assert k.grad[b, :, n:].abs().sum() == 0 and v.grad[b, :, n:].abs().sum() == 0
    assert k.grad[1, :, :5].abs().sum() > 0


def test_attention_bench_runs_its_reference_on_the_cpu() -> None:
    import argparse

    from step_kernels import bench_attention

    args = argparse.Namespace(batch=3, frames=40, iters=1, attn_dropout=0.1)
    result = bench_attention(args)
    assert result["shape"]["shortest_clip"] == 38 and list(result["rows"]) == ["math"]
    assert result["rows"]["math"]["out_max_rel_diff"] == 0.0  # the reference against itself
    assert result["tflop"] == round(2 * 2 * 3 * 16 * 40 * 40 * 64 * 3.5 / 1e12, 4)
