"""`specaug: sync_free_specaug` (cvasr.speedups.sync_free_specaug) masks as espnet2's SpecAug does
(the same distribution of masked frames: espnet2's own masking is the oracle) without reading a
tensor's value on the host."""

from __future__ import annotations

import pytest
import torch
from espnet2.asr.specaug.specaug import SpecAug
from espnet2.layers.mask_along_axis import mask_along_axis
from torch.utils._python_dispatch import TorchDispatchMode

from cvasr.speedups.sync_free_specaug import (SyncFreeMaskAlongAxisVariableMaxWidth,
                                              SyncFreeSpecAug, mask_along_axis_sync_free)


class HostReads(TorchDispatchMode):
    """Counts the ops that copy a tensor's value to the host (`.item()`, `int()`, `bool()`):
    on a GPU each is a sync."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dim, width", [(1, (0, 12)), (2, (2, 6))])
def test_masked_frames_are_distributed_as_espnet2s(dim: int, width: tuple[int, int]) -> None:
    """Over 4000 clips, the share of clips masked at each frame (or bin) matches espnet2's own
    masking within sampling noise (about 0.005), including at the edges, where the positions'
    bound (the length minus the widest mask) shows."""
    shape = (4000, 120, 3) if dim == 1 else (4000, 3, 40)
    coverage = []
    for masking in (mask_along_axis, mask_along_axis_sync_free):
        torch.manual_seed(0)
        ones = torch.ones(shape)
        if masking is mask_along_axis:
            out, _ = masking(ones, None, mask_width_range=width, dim=dim, num_mask=4)
        else:
            out = masking(ones, mask_width_range=width, dim=dim, num_mask=4)
        masked = (out == 0).all(dim=3 - dim)  # (clips, frames or bins)
        coverage.append(masked.float().mean(0))
    espnet2s, ours = coverage
    assert 0.05 < espnet2s.mean() < 0.6
    torch.testing.assert_close(ours, espnet2s, rtol=0, atol=0.03)
    assert espnet2s[-1] == ours[-1] == 0  # no mask starts at or past the bound


def test_no_host_reads_where_espnet2_has_them() -> None:
    spec = torch.randn(8, 200, 4)
    with HostReads() as espnet2s:
        mask_along_axis(spec.clone(), None, mask_width_range=(0, 10), dim=1, num_mask=4)
    with HostReads() as ours:
        mask_along_axis_sync_free(spec.clone(), (0, 10), dim=1, num_mask=4)
    assert espnet2s.count >= 1 and ours.count == 0


def test_specaug_keeps_espnet2s_options() -> None:
    """The XLS-R config's SpecAugment (time masks 0-5% of the length, 4 a clip): the same
    options, its time mask drawn on the device, and clips masked in whole frames."""
    conf = dict(apply_time_warp=False, apply_freq_mask=False, apply_time_mask=True,
                time_mask_width_ratio_range=[0.0, 0.05], num_time_mask=4)
    ref, ours = SpecAug(**conf), SyncFreeSpecAug(**conf)
    assert isinstance(ours.time_mask, SyncFreeMaskAlongAxisVariableMaxWidth)
    assert ours.freq_mask is None and ours.time_warp is None
    assert (ours.time_mask.mask_width_ratio_range, ours.time_mask.num_mask) == \
        (tuple(ref.time_mask.mask_width_ratio_range), ref.time_mask.num_mask)
    torch.manual_seed(0)
    x = torch.randn(16, 300, 8, requires_grad=True)
    out, lengths = ours(x, torch.full((16,), 300))
    zero_frames = (out == 0).all(-1)
    assert zero_frames.any() and torch.equal(lengths, torch.full((16,), 300))
    assert torch.equal(out[~zero_frames], x[~zero_frames])
    assert (zero_frames.sum(1) <= 4 * 14).all()  # 4 masks of at most 14 frames (5% of 300)
