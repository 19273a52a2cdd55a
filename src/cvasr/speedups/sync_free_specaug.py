"""`specaug: sync_free_specaug`: espnet2's SpecAug with masking that never reads the GPU.

Why: espnet2's `mask_along_axis` draws the masks' positions with
`torch.randint(0, max(1, D - mask_length.max()))`, which needs the longest mask on the host:
two host syncs a step. In our model SpecAugment runs on the upstream's output, after the whole
transformer's forward, so each sync holds the CPU until the forward is done; with the CTC loss
made sync-free as well (`model_conf: {ctc_impl: triton}`) these are the syncs left before the
backward (bench/NOTES.md, round 5).

Here the positions are `floor(U x bound)` with U uniform in [0, 1) drawn on the device and
`bound = max(1, D - longest mask)` a device tensor: the same distribution as espnet2's (uniform
integers below the same bound), not the same draws, so a run's masks differ from espnet2's
under the same seed. Mask widths are drawn as espnet2 draws them. Frequency masks and time
masks (fixed or ratio widths) are replaced; time warping, if asked for, stays espnet2's.

Status: timed on an H200 with the Triton CTC (bench/NOTES.md, rounds 6, 7 and 15): the eager
step no faster, the compiled one 18% slower, with CUDA graphs 19% faster than CUDA graphs alone
(the step then has no host sync); the XLS-R config uses it.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from espnet2.asr.specaug.specaug import SpecAug
from espnet2.layers.mask_along_axis import MaskAlongAxis, MaskAlongAxisVariableMaxWidth


def mask_along_axis_sync_free(spec: torch.Tensor, mask_width_range: Sequence[int], dim: int,
                              num_mask: int, replace_with_zero: bool = True) -> torch.Tensor:
    """espnet2's `mask_along_axis` without reading the GPU: `num_mask` spans a clip along
    `dim` (1: time, 2: frequency of a (B, T, F) or (B, C, T, F) tensor) set to 0 or the mean."""
    size = spec.size()
    if spec.dim() == 4:
        spec = spec.view(-1, spec.size(2), spec.size(3))
    batch, extent = spec.shape[0], spec.shape[dim]
    lengths = torch.randint(mask_width_range[0], mask_width_range[1], (batch, num_mask, 1),
                            device=spec.device)
    bound = (extent - lengths.max()).clamp(min=1)
    starts = (torch.rand(batch, num_mask, 1, device=spec.device) * bound).long()
    starts = torch.minimum(starts, bound - 1)  # U x bound may round up to bound in float32
    frames = torch.arange(extent, device=spec.device)[None, None, :]
    mask = ((starts <= frames) & (frames < starts + lengths)).any(dim=1)
    mask = mask.unsqueeze(2) if dim == 1 else mask.unsqueeze(1)
    value = 0.0 if replace_with_zero else spec.mean()
    spec = spec.masked_fill(mask, value) if spec.requires_grad else spec.masked_fill_(mask, value)
    return spec.view(*size)


class SyncFreeMaskAlongAxis(MaskAlongAxis):
    """espnet2's fixed-width masking, positions drawn on the device."""

    def forward(self, spec: torch.Tensor, spec_lengths: Optional[torch.Tensor] = None):
        return mask_along_axis_sync_free(spec, self.mask_width_range, self.dim, self.num_mask,
                                         self.replace_with_zero), spec_lengths


class SyncFreeMaskAlongAxisVariableMaxWidth(MaskAlongAxisVariableMaxWidth):
    """espnet2's masking with widths a ratio of the length, positions drawn on the device."""

    def forward(self, spec: torch.Tensor, spec_lengths: Optional[torch.Tensor] = None):
        extent = spec.shape[self.dim]
        low = max(0, math.floor(extent * self.mask_width_ratio_range[0]))
        high = min(extent, math.floor(extent * self.mask_width_ratio_range[1]))
        if high > low:  # as espnet2: no mask where the widest would be under one frame
            spec = mask_along_axis_sync_free(spec, (low, high), self.dim, self.num_mask,
                                             self.replace_with_zero)
        return spec, spec_lengths


def _sync_free(mask: Optional[torch.nn.Module]) -> Optional[torch.nn.Module]:
    """The same masking module, drawing its positions on the device."""
    if isinstance(mask, MaskAlongAxisVariableMaxWidth):
        return SyncFreeMaskAlongAxisVariableMaxWidth(
            mask_width_ratio_range=tuple(mask.mask_width_ratio_range), num_mask=mask.num_mask,
            dim=mask.dim, replace_with_zero=mask.replace_with_zero)
    if isinstance(mask, MaskAlongAxis):
        return SyncFreeMaskAlongAxis(mask_width_range=tuple(mask.mask_width_range),
                                     num_mask=mask.num_mask, dim=mask.dim,
                                     replace_with_zero=mask.replace_with_zero)
    return mask


class SyncFreeSpecAug(SpecAug):
    """espnet2's SpecAug (the same options) with its masks' positions drawn on the device."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.freq_mask = _sync_free(self.freq_mask)
        self.time_mask = _sync_free(self.time_mask)
