"""`frontend: wav2vec2_s3prl`: espnet2's s3prl frontend for wav2vec 2.0 upstreams, without host syncs.

Why: with XLS-R in bf16 the GPU finishes a training step faster than the CPU can issue it, and
s3prl's generic path stalls the CPU on the GPU about a thousand times a step: `S3PRLUpstream`
takes `max()` over a length tensor, element by element, once for each of the 25 hidden states,
and the wav2vec 2.0 expert does it again for the padding mask. A profile of one epoch on an
H200 counted 15,496 `.item()` calls and the GPU busy 45% of the time (bench/NOTES.md).

This frontend reads the lengths to the host once, normalises and pads the waveforms as a batch,
and asks the model for its last layer only (`extract_features(...)["x"]`, the tensor s3prl's hook
on the encoder returns as the last hidden state). The numbers are those of espnet2's
`S3prlFrontend` with `multilayer_feature: false` (tests/test_frontend.py compares the two); the
modules and state_dict keys are the same, so checkpoints move freely between the two. Any other
use (multi-layer features, a selected layer, non-wav2vec 2.0 upstreams) falls back to espnet2's
own path.
"""

from __future__ import annotations

from typing import Tuple

import torch
from espnet2.asr.frontend.s3prl import S3prlFrontend

#: s3prl.nn.upstream pads batches shorter than this many samples (MIN_SECOND x 16 kHz).
MIN_SAMPLES = 800
#: wav2vec 2.0's feature encoder turns 320 samples into one frame.
STRIDE = 320


class Wav2Vec2S3prlFrontend(S3prlFrontend):
    """S3prlFrontend whose last-layer path for s3prl's wav2vec 2.0 experts needs one host sync."""

    def _fast_path(self) -> bool:
        expert = self.upstream.upstream
        return (not self.multilayer_feature and self.layer == -1 and self.tile_factor == 1
                and not self.upstream.normalize
                and type(expert).__module__.startswith("s3prl.upstream.wav2vec2")
                and getattr(expert, "feature_selection", "x") is None
                and getattr(expert, "apply_padding_mask", False)
                and not getattr(expert, "numpy_wav_normalize", True))

    def forward(self, input: torch.Tensor,
                input_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self._fast_path():
            return super().forward(input, input_lengths)
        expert = self.upstream.upstream
        if input.dim() == 3:
            input = input.squeeze(-1)
        lengths = input_lengths.tolist()  # the one host sync
        longest = max(lengths)
        padded_lengths = list(lengths)
        if longest < MIN_SAMPLES:  # as S3PRLUpstream does: every clip grows by the same amount
            padded_lengths = [n + MIN_SAMPLES - longest for n in lengths]
            longest = MIN_SAMPLES
        wavs = input[:, :longest]
        if wavs.size(1) < longest:
            wavs = torch.nn.functional.pad(wavs, (0, longest - wavs.size(1)))
        valid_len = torch.tensor(padded_lengths, device=input.device)
        valid = torch.arange(longest, device=input.device)[None, :] < valid_len[:, None]
        wavs = wavs.float() * valid
        if expert.wav_normalize:  # F.layer_norm over each clip's own samples, as a batch
            count = valid_len[:, None].to(wavs.dtype)
            mean = wavs.sum(1, keepdim=True) / count
            var = ((wavs - mean) * valid).pow(2).sum(1, keepdim=True) / count
            wavs = (wavs - mean) * torch.rsqrt(var + 1e-5) * valid
        try:
            feats = expert.model.extract_features(wavs, ~valid)["x"]
        finally:
            expert._hook_hiddens.clear()  # s3prl's layer hooks fill this on every call
        frames = -(-longest // STRIDE)  # len(range(0, longest, STRIDE)), as S3PRLUpstream
        feats = self.upstream._match_length(feats, frames)
        feats_lens = torch.div(input_lengths - 1, STRIDE, rounding_mode="floor") + 1
        return feats[:, : (max(lengths) - 1) // STRIDE + 1], feats_lens
