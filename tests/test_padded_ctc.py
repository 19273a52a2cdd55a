"""CTC with certain-blank padding (cvasr.speedups.padded_ctc) gives PyTorch's own CTC losses and
gradients on batches of clips of different lengths (the oracle: F.ctc_loss with the true
lengths; on the CPU both run PyTorch's native CTC, on a GPU the padded one runs cuDNN's)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cvasr.speedups.padded_ctc import cudnn_takes, padded_ctc_loss

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
