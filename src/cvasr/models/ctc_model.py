"""The espnet2 model pieces the recipe's configs name, registered with espnet2's ASR task.

- `IdentityEncoder` (`encoder: identity`): XLS-R + a linear CTC head, as the seed model is, needs
  no encoder between the s3prl frontend and espnet2's CTC layer.
- `CTCWerASRModel` (`model: cvasr_ctc`): espnet2 reports CTC's CER on validation but not its
  WER; this model reports both (`cer_ctc`, `wer_ctc`) every epoch, and takes the dump's integer
  samples. `model_conf: {ctc_impl: triton}` trains with the CTC loss of
  `cvasr.speedups.ctc_triton` (no host syncs) instead of PyTorch's, the same loss. Its forward
  hands espnet2 a `force_gatherable` without the host sync (`gatherable_without_sync`).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Optional, Tuple

import editdistance
import torch
import torch.nn.functional as F
from espnet2.asr import espnet_model as espnet2_asr_model
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.torch_utils.device_funcs import force_gatherable

from cvasr.decoding.ctc import collapse_ctc, join_tokens
from cvasr.models.frontend import Wav2Vec2S3prlFrontend, to_device_async


def gatherable_without_sync(data: Any, device: torch.device) -> Any:
    """espnet2's `force_gatherable` without its host sync. espnet2 makes each Python number a
    tensor on `device` with `torch.tensor(..., device=...)`, a blocking copy that waits until the
    GPU's queue is empty: at the end of every training forward, for the batch size, so the CPU
    could not queue the backward while the GPU still ran the forward (bench/NOTES.md, round 14).
    Here numbers go to the device from pinned memory, as the same tensors (shape (1,), float32
    or int64); the rest is espnet2's own."""
    return force_gatherable(_numbers_to_device(data, device), device)


def _numbers_to_device(data: Any, device: torch.device) -> Any:
    """Python numbers in dicts, lists and plain tuples as force_gatherable makes them, without
    a sync (to_device_async); anything else unchanged, for force_gatherable."""
    if isinstance(data, float):
        return to_device_async(torch.tensor([data], dtype=torch.float), device)
    if isinstance(data, int):  # bool too, as in force_gatherable
        return to_device_async(torch.tensor([data], dtype=torch.long), device)
    if isinstance(data, dict):
        return {k: _numbers_to_device(v, device) for k, v in data.items()}
    if type(data) in (list, tuple):
        return type(data)(_numbers_to_device(v, device) for v in data)
    return data


@contextlib.contextmanager
def _espnet2_gathers_without_sync() -> Iterator[None]:
    """ESPnetASRModel.forward calling gatherable_without_sync for force_gatherable (it looks the
    name up in its module), for as long as the block runs; then whatever it called before."""
    before = espnet2_asr_model.force_gatherable
    espnet2_asr_model.force_gatherable = gatherable_without_sync
    try:
        yield
    finally:
        espnet2_asr_model.force_gatherable = before


class IdentityEncoder(AbsEncoder):
    """Passes the frontend's features through unchanged (CTC sits directly on the upstream)."""

    def __init__(self, input_size: int, dropout_rate: float = 0.0):
        super().__init__()
        self._output_size = input_size
        self.dropout = torch.nn.Dropout(dropout_rate)

    def output_size(self) -> int:
        return self._output_size

    def forward(self, xs_pad: torch.Tensor, ilens: torch.Tensor,
                prev_states: torch.Tensor = None) -> Tuple[torch.Tensor, torch.Tensor, None]:
        return self.dropout(xs_pad), ilens, None


class CTCWerASRModel(ESPnetASRModel):
    """ESPnetASRModel that also reports the greedy CTC word error rate on validation.

    It also takes integer waveforms: espnet2's `kaldi_ark` loader hands the dump's 16-bit
    samples over as integers, and the frontends want floats (in the int16 range; the frontends
    used here normalise the scale away).
    """

    _last_wer_ctc: Optional[float] = None
    #: where the training loss's CTC comes from: "torch" (espnet2's CTC module) or "triton"
    CTC_IMPLS = ("torch", "triton")

    def __init__(self, *args: Any, ctc_impl: str = "torch", **kwargs: Any):
        super().__init__(*args, **kwargs)
        if ctc_impl not in self.CTC_IMPLS:
            raise ValueError(f"model_conf ctc_impl: {ctc_impl!r} is none of {self.CTC_IMPLS}")
        self.ctc_impl = ctc_impl

    @property
    def takes_host_lengths(self) -> bool:
        """Whether forward() may get its `*_lengths` tensors on the host with the data on the GPU
        (`sync_free_step`): so for the path checked to read them there without a sync, our
        wav2vec 2.0 frontend, no normalisation, the identity encoder and CTC alone."""
        return (isinstance(self.frontend, Wav2Vec2S3prlFrontend) and self.frontend._fast_path()
                and isinstance(self.encoder, IdentityEncoder) and self.normalize is None
                and self.preencoder is None and self.postencoder is None
                and self.ctc_weight == 1.0 and self.interctc_weight == 0.0
                and not self.use_transducer_decoder)

    def _extract_feats(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        if not torch.is_floating_point(speech):
            speech = speech.float()
        return super()._extract_feats(speech, speech_lengths)

    def _uses_triton_ctc(self, encoder_out: torch.Tensor) -> bool:
        """ctc_impl: triton, training (validation keeps espnet2's path, with its CER), espnet2's
        builtin batch-averaged CTC, and a tensor Triton can run on: a GPU's, or any in Triton's
        interpreter (TRITON_INTERPRET=1, how the tests run it)."""
        return (self.ctc_impl == "triton" and self.training and self.ctc.ctc_type == "builtin"
                and self.ctc.reduce
                and (encoder_out.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"))

    def _triton_ctc_loss(self, encoder_out: torch.Tensor, encoder_out_lens: torch.Tensor,
                         ys_pad: torch.Tensor, ys_pad_lens: torch.Tensor) -> torch.Tensor:
        """espnet2's `CTC.forward` (builtin) with cvasr.speedups.ctc_triton's loss: the same
        dropout, head, log-softmax in fp32, batch average and output dtype. Host lengths (the
        sync-free step's) go to the GPU from pinned memory; the longest target is read from
        them, a sync only where they are on the GPU already."""
        from cvasr.speedups.ctc_triton import triton_ctc_loss  # imports triton

        ctc = self.ctc
        logits = ctc.ctc_lo(F.dropout(encoder_out, p=ctc.dropout_rate))
        log_probs = logits.transpose(0, 1).log_softmax(2).float()
        device = encoder_out.device
        losses = triton_ctc_loss(log_probs, ys_pad, to_device_async(encoder_out_lens, device),
                                 to_device_async(ys_pad_lens, device), int(ys_pad_lens.max()),
                                 blank=ctc.ctc_loss.blank,
                                 zero_infinity=ctc.ctc_loss.zero_infinity)
        loss = losses.sum() / log_probs.size(1)
        return loss.to(device=encoder_out.device, dtype=encoder_out.dtype)

    def _calc_ctc_loss(self, encoder_out, encoder_out_lens, ys_pad, ys_pad_lens):
        if self._uses_triton_ctc(encoder_out):  # training: espnet2 computes no CER there
            loss_ctc, cer_ctc = self._triton_ctc_loss(encoder_out, encoder_out_lens, ys_pad,
                                                      ys_pad_lens), None
        else:
            loss_ctc, cer_ctc = super()._calc_ctc_loss(encoder_out, encoder_out_lens, ys_pad,
                                                       ys_pad_lens)
        self._last_wer_ctc = None
        if not self.training:
            best = self.ctc.argmax(encoder_out).cpu()
            errors = words = 0
            for b in range(best.size(0)):
                hyp_ids = collapse_ctc(best[b, : encoder_out_lens[b]].tolist(), self.blank_id)
                hyp = join_tokens([self.token_list[i] for i in hyp_ids]).split()
                # The reference is a labelling already: no CTC collapsing of repeated tokens.
                ref = join_tokens([self.token_list[i] for i in ys_pad[b, : ys_pad_lens[b]].tolist()
                                   if i >= 0]).split()
                errors += editdistance.eval(hyp, ref)
                words += len(ref)
            self._last_wer_ctc = errors / words if words else 0.0
        return loss_ctc, cer_ctc

    def forward(self, *args: Any, **kwargs: Any):
        # espnet2's trainer passes the batch's utterance ids; the frontend may cache by them
        cache_keyed = isinstance(self.frontend, Wav2Vec2S3prlFrontend)
        if cache_keyed:
            self.frontend.utt_ids = kwargs.get("utt_id")
        try:
            with _espnet2_gathers_without_sync():
                loss, stats, weight = super().forward(*args, **kwargs)
        finally:
            if cache_keyed:
                self.frontend.utt_ids = None
        if self._last_wer_ctc is not None:
            # As espnet2 does for its own stats: a tensor, so DDP can average it across ranks.
            stats["wer_ctc"] = gatherable_without_sync(self._last_wer_ctc, loss.device)
        return loss, stats, weight
