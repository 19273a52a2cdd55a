"""wav2vec 2.0's positional convolution as one batched GEMM over unfolded frames.

Why: the positional convolution (1024 channels, kernel 128, 16 groups) is about 3% of XLS-R's
FLOPs but took 15% of the GPU time of a training step (bench/NOTES.md): cuDNN has no fast
kernel for a grouped convolution with so wide a kernel. Written as a matrix product of each
group's weights (64 outputs x 64 channels x 128 taps) with the frames' windows (T x 64*128 a
group) it runs on the tensor cores, at the cost of materialising the windows (B x 1024 x T x 128
values: 2 GB in bf16 for 32 clips of 250 frames).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


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
