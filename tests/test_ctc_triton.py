"""The Triton CTC (cvasr.speedups.ctc_triton) gives PyTorch's CTC losses and, through
log_softmax, its gradients; here its kernels run in Triton's interpreter (on the CPU; the GPU
runs are bench/step_kernels.py's, which compares the two again)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Iterator

import pytest
import torch
import torch.nn.functional as F

# the interpreter's log(0) = -inf, which the recursion means
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero encountered in log")

# clip 1 repeats a label, clip 3 cannot be aligned in its 3 frames, clip 4 has no label
FRAMES = [12, 7, 9, 3, 5]
TARGETS = [[1, 2, 3], [4, 4, 2], [5, 1, 5, 1], [1, 2, 1, 2], []]


@pytest.fixture(scope="module")
def ctc_triton() -> Iterator[ModuleType]:
    """The module with its kernels run by Triton's interpreter: TRITON_INTERPRET set while this
    file's tests run (Triton reads it when a kernel is defined and when it runs), then restored."""
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import cvasr.speedups.ctc_triton as module
        yield importlib.reload(module)
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before


def _run(ctc_triton: ModuleType | None, zero_infinity: bool = True
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Losses and the logits' gradients, from ctc_triton's loss, or PyTorch's when None."""
    torch.manual_seed(0)
    logits = torch.randn(max(FRAMES), len(FRAMES), 6, requires_grad=True)
    log_probs = logits.log_softmax(-1)
    lengths = torch.tensor([len(t) for t in TARGETS])
    if ctc_triton is not None:
        padded = torch.full((len(TARGETS), max(lengths)), -1)
        for b, t in enumerate(TARGETS):
            padded[b, : len(t)] = torch.tensor(t, dtype=torch.long)
        losses = ctc_triton.triton_ctc_loss(log_probs, padded, torch.tensor(FRAMES), lengths,
                                 int(lengths.max()), zero_infinity=zero_infinity)
    else:
        flat = torch.tensor([x for t in TARGETS for x in t])
        losses = F.ctc_loss(log_probs, flat, torch.tensor(FRAMES), lengths, reduction="none",
                            zero_infinity=zero_infinity)
    (losses * torch.arange(1, 6)).sum().backward()  # another weight a clip
    assert logits.grad is not None
    return losses.detach(), logits.grad


def test_losses_and_gradients_are_pytorchs(ctc_triton: ModuleType) -> None:
    losses, grads = _run(ctc_triton)
    want_losses, want_grads = _run(None)
    assert torch.isfinite(want_losses).all() and want_losses[3] == 0  # zeroed: unalignable
    torch.testing.assert_close(losses, want_losses, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads, want_grads, rtol=1e-4, atol=1e-5)
    for b, n in enumerate(FRAMES):  # frames past a clip's length take no gradient
        assert not grads[n:, b].any()


def test_an_unalignable_clip_is_infinite_without_zero_infinity(ctc_triton: ModuleType
                                                               ) -> None:
    log_probs = torch.zeros(3, 1, 4).log_softmax(-1)
    loss = ctc_triton.triton_ctc_loss(log_probs, torch.tensor([[1, 2, 1, 2]]), torch.tensor([3]),
                           torch.tensor([4]), 4, zero_infinity=False)
    assert torch.isinf(loss).all()
