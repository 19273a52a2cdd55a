"""The sync-free wav2vec 2.0 frontend computes what espnet2's S3prlFrontend computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from espnet2.asr.frontend.s3prl import S3prlFrontend

from cvasr.frontend import Wav2Vec2S3prlFrontend


def _pair(upstream: Path) -> tuple[S3prlFrontend, Wav2Vec2S3prlFrontend]:
    conf = {"upstream": "wav2vec2_custom", "path_or_url": str(upstream)}
    ref = S3prlFrontend(fs="16k", frontend_conf=conf, multilayer_feature=False)
    ours = Wav2Vec2S3prlFrontend(fs="16k", frontend_conf=conf, multilayer_feature=False)
    ours.load_state_dict(ref.state_dict())
    return ref.eval(), ours.eval()


@pytest.mark.parametrize("lengths", [[16000, 12345, 9000], [4000], [700, 500], [321, 320, 960]])
def test_same_features_and_lengths_as_espnet2(tiny_upstream: Path, lengths: list[int]) -> None:
    ref, ours = _pair(tiny_upstream)
    assert ours._fast_path()
    gen = torch.Generator().manual_seed(sum(lengths))
    batch = torch.zeros(len(lengths), max(lengths) + 37)  # extra padding beyond the longest clip
    for b, n in enumerate(lengths):
        batch[b, :n] = torch.randn(n, generator=gen) * 3000
    lens = torch.tensor(lengths)
    with torch.no_grad():
        want, want_lens = ref(batch, lens)
        got, got_lens = ours(batch, lens)
    assert got.shape == want.shape
    assert torch.equal(got_lens, want_lens)
    for b, n in enumerate(want_lens.tolist()):  # valid frames agree; padding frames are masked
        torch.testing.assert_close(got[b, :n], want[b, :n], rtol=1e-4, atol=1e-4)
    assert not ours.upstream.upstream._hook_hiddens  # nothing left behind between calls


def test_same_gradients_as_espnet2(tiny_upstream: Path) -> None:
    ref, ours = _pair(tiny_upstream)
    batch = torch.randn(2, 8000) * 3000
    lens = torch.tensor([8000, 6000])
    grads = []
    for frontend in (ref, ours):
        frontend.zero_grad()
        feats, feats_lens = frontend(batch, lens)
        mask = torch.arange(feats.size(1))[None, :] < feats_lens[:, None]
        (feats.pow(2).sum(-1) * mask).sum().backward()
        grads.append(frontend.upstream.upstream.model.encoder.layers[0].fc1.weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-3)


def test_other_uses_fall_back_to_espnet2(tiny_upstream: Path) -> None:
    conf = {"upstream": "wav2vec2_custom", "path_or_url": str(tiny_upstream)}
    assert not Wav2Vec2S3prlFrontend(fs="16k", frontend_conf=conf,
                                     multilayer_feature=True)._fast_path()
    assert not Wav2Vec2S3prlFrontend(fs="16k", frontend_conf={"upstream": "mel"})._fast_path()
