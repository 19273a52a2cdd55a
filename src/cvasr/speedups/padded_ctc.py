"""CTC loss through cuDNN, for batches whose clips have different lengths.

Why: PyTorch's own CUDA CTC copies its host-side bookkeeping (the lengths and the targets'
offsets) to the GPU with blocking copies, 8 host syncs a training step (bench/NOTES.md), so the
CPU cannot queue the next step's work while the GPU runs this one. PyTorch hands the loss to
cuDNN instead when the targets are int32 on the host, blank is 0, no target is 256 labels or
longer and **every input length equals the padded length T**; a batch of clips of several
lengths fails the last condition.

It can be met without changing the loss: give every frame past a clip's length the log-
probabilities of a certain blank (0 for blank, -inf for every other token) and call its length
T. Every alignment of the padded clip is then an alignment of the clip followed by blanks, with
the same probability (each added frame contributes log 1 = 0), and no other alignment has a
non-zero probability: the loss of each clip is unchanged, and so is its gradient on the real
frames (the padded ones take no gradient: they are constants). A clip whose target cannot be
aligned in its own frames stays unalignable (infinite loss); `zero_infinity` zeroes it as
PyTorch's does.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


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
