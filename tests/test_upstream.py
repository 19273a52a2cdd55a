"""Random-init wav2vec 2.0 checkpoints load through s3prl and espnet2's S3prlFrontend."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cvasr.models.upstream import ARCHS, inspect_upstream, write_random_upstream

ONE_SECOND = 16000
FRAMES_PER_SECOND = 50  # s3prl pads the waveform so that a 320-sample hop gives len // 320 frames


def hidden_states(path: Path) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    from s3prl.nn import S3PRLUpstream

    upstream = S3PRLUpstream("wav2vec2_custom", path_or_url=str(path)).eval()
    wavs = torch.randn(2, ONE_SECOND)
    lengths = torch.tensor([ONE_SECOND, ONE_SECOND // 2])
    with torch.no_grad():
        states, state_lengths = upstream(wavs, lengths)
    return states, state_lengths, sum(p.numel() for p in upstream.parameters())


def frontend_features(path: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    frontend = S3prlFrontend(fs=16000, frontend_conf={"upstream": "wav2vec2_custom",
                                                      "path_or_url": str(path)}).eval()
    with torch.no_grad():
        feats, lengths = frontend(torch.randn(1, ONE_SECOND), torch.tensor([ONE_SECOND]))
    return feats, lengths, frontend.output_size()


def test_tiny_loads_through_s3prl_and_espnet(tiny_upstream: Path) -> None:
    states, lengths, n_params = hidden_states(tiny_upstream)
    layers, dim = ARCHS["tiny"]["encoder_layers"], ARCHS["tiny"]["encoder_embed_dim"]
    assert len(states) == layers + 1  # the input of every layer and the encoder output
    assert all(s.shape == (2, FRAMES_PER_SECOND, dim) for s in states)
    assert lengths[-1].tolist() == [FRAMES_PER_SECOND, FRAMES_PER_SECOND // 2]
    assert n_params < 1_000_000
    feats, feat_lengths, out_dim = frontend_features(tiny_upstream)
    assert out_dim == dim and feats.shape == (1, FRAMES_PER_SECOND, dim)
    assert feat_lengths.tolist() == [FRAMES_PER_SECOND]


def test_random_init_is_deterministic(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"
    write_random_upstream("tiny", a, seed=5)
    write_random_upstream("tiny", b, seed=5)
    write_random_upstream("tiny", c, seed=6)
    wa, wb, wc = (torch.load(p, weights_only=False)["model_weight"] for p in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


@pytest.mark.slow
def test_xls_r_300m_has_the_real_shape(tmp_path: Path) -> None:
    path = tmp_path / "xls_r_300m.pt"
    write_random_upstream("xls_r_300m", path)
    info = inspect_upstream(path)
    assert (info.format, info.layers, info.dim) == ("s3prl", 24, 1024)
    states, lengths, n_params = hidden_states(path)
    assert 310e6 < n_params < 320e6  # XLS-R 300M with its quantiser, as s3prl loads it
    assert len(states) == 25
    assert all(s.shape == (2, FRAMES_PER_SECOND, 1024) for s in states)
    assert lengths[-1].tolist() == [FRAMES_PER_SECOND, FRAMES_PER_SECOND // 2]
    weights = torch.load(path, weights_only=False, mmap=True)["model_weight"]
    assert weights["encoder.layers.0.fc1.weight"].shape == (4096, 1024)
    assert weights["encoder.layers.23.self_attn.q_proj.weight"].shape == (1024, 1024)
    assert weights["feature_extractor.conv_layers.0.0.weight"].shape == (512, 1, 10)
    del states
    feats, _, out_dim = frontend_features(path)
    assert out_dim == 1024 and feats.shape == (1, FRAMES_PER_SECOND, 1024)


def test_inspect_recognises_formats_and_rejects_others(tmp_path: Path, tiny_upstream: Path) -> None:
    info = inspect_upstream(tiny_upstream)
    assert (info.format, info.layers, info.dim) == ("s3prl", 2, 128)
    assert info.s3prl_options == {"upstream": "wav2vec2_custom", "path_or_url": str(tiny_upstream)}

    state = torch.load(tiny_upstream, weights_only=False)
    fairseq = tmp_path / "fairseq.pt"
    torch.save({"cfg": {"model": state["model_cfg"], "task": state["task_cfg"]},
                "model": state["model_weight"]}, fairseq)
    assert inspect_upstream(fairseq).format == "fairseq"

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="neither an s3prl .* it has keys state_dict"):
        inspect_upstream(foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt is not a readable PyTorch checkpoint"):
        inspect_upstream(garbage)
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        inspect_upstream(tmp_path / "missing.pt")
