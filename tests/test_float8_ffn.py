"""`float8_ffn`: the transformer's fc1 and fc2 become torchao's Float8Linear, parameters untouched,
and the model still trains (torchao emulates float8 on the CPU)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torchao.float8.float8_linear import Float8Linear

from cvasr.speedups import float8_ffn
from cvasr.training.task import CvasrASRTask, SafeCheckpointTrainer
from conftest import xlsr_model


def _features(model: torch.nn.Module) -> torch.Tensor:
    """The upstream's last hidden state of two clips, under bf16 autocast as training runs it."""
    gen = torch.Generator().manual_seed(0)
    speech = torch.randn(2, 12000, generator=gen) * 3000
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats, _ = model.frontend(speech, torch.tensor([12000, 9000]))
    return feats


def test_ffn_linears_become_float8_with_the_same_parameters(tmp_path: Path,
                                                           tiny_upstream: Path) -> None:
    model = xlsr_model(tmp_path, tiny_upstream).eval()  # eval: no dropout, losses comparable
    bf16 = copy.deepcopy(model)
    before = {k: v for k, v in model.state_dict().items()}
    args = CvasrASRTask.get_parser().parse_args(["--float8_ffn", "true"])
    options = SafeCheckpointTrainer.build_options(args)
    assert options.float8_ffn is True and options.compile_upstream is False
    SafeCheckpointTrainer.prepare_model(model, options)
    layers = model.frontend.upstream.upstream.model.encoder.layers
    assert all(isinstance(layer.fc1, Float8Linear) and isinstance(layer.fc2, Float8Linear)
               for layer in layers)
    assert not isinstance(layers[0].self_attn.q_proj, Float8Linear)  # attention: untouched
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(after[k] is before[k] or torch.equal(after[k], before[k]) for k in before)
    assert float8_ffn.convert_ffn_to_float8(model) == 2 * len(layers)  # again: nothing changes
    got, want = _features(model), _features(bf16)
    assert torch.isfinite(got).all()
    error = (got.float() - want.float()).norm() / want.float().norm()
    assert 0 < error < 0.05  # float8 rounding in fc1 and fc2, nothing else
    got.float().pow(2).mean().backward()
    assert layers[0].fc1.weight.grad is not None and torch.isfinite(layers[0].fc1.weight.grad).all()


def test_gpus_without_float8_tensor_cores_are_refused(tmp_path: Path, tiny_upstream: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model = xlsr_model(tmp_path, tiny_upstream)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    with pytest.raises(ValueError, match=r"NVIDIA A100 \(compute capability 8.0\) has no float8"):
        float8_ffn.convert_ffn_to_float8(model, torch.device("cuda", 0))
    assert not any(isinstance(m, Float8Linear) for m in model.modules())


def test_float8_gemms_pad_their_inner_dimension() -> None:
    """torch._scaled_mm wants inner dimensions of multiples of 16; the weight gradient's is the
    batch's frame count (34 clips x 330 frames = 11220 failed to compile on an H200)."""
    assert float8_ffn.float8_config().pad_inner_dim is True
