"""cvasr_ctc's forward hands espnet2 a force_gatherable without the host sync: the same tensors
as espnet2's own (the GPU side, no sync a step, is bench/train_throughput.py's sync report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from espnet2.asr import espnet_model as espnet2_asr_model
from espnet2.torch_utils.device_funcs import force_gatherable

from conftest import xlsr_model
from cvasr.models.ctc_model import gatherable_without_sync


def _flatten(data: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, leaf) pairs, with each container's type in the path."""
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _flatten(v, f"{path}/dict[{k}]")]
    if isinstance(data, (list, tuple)):
        return [p for i, v in enumerate(data)
                for p in _flatten(v, f"{path}/{type(data).__name__}[{i}]")]
    return [(path, data)]


def test_gathers_what_espnet2_gathers() -> None:
    data = (torch.tensor(2.5), {"loss": torch.tensor(1.0), "cer": None, "wer": 0.25,
                                "count": 3, "ok": True, "arr": np.arange(3.0),
                                "nested": [7, 0.5, torch.ones(2, dtype=torch.bfloat16)]}, 34)
    ours, theirs = (_flatten(f(data, torch.device("cpu")))
                    for f in (gatherable_without_sync, force_gatherable))
    assert [p for p, _ in ours] == [p for p, _ in theirs]
    assert len(ours) == 11
    for (path, a), (_, b) in zip(ours, theirs):
        assert type(a) is type(b), path
        if isinstance(b, torch.Tensor):
            assert (a.dtype, a.shape, a.device) == (b.dtype, b.shape, b.device), path
            assert torch.equal(a, b), path


def test_the_forward_gives_espnet2_its_own_gather_back(tmp_path: Path,
                                                        tiny_upstream: Path) -> None:
    """The batch weight as espnet2 makes it, and espnet2's module name restored after the
    forward, also after one that fails."""
    model = xlsr_model(tmp_path, tiny_upstream)
    torch.manual_seed(1)
    speech = torch.randn(2, 16000) * 3000
    loss, stats, weight = model(speech=speech, speech_lengths=torch.tensor([16000, 12000]),
                                text=torch.tensor([[3, 4, 4, 5], [6, 7, -1, -1]]),
                                text_lengths=torch.tensor([4, 2]))
    assert torch.equal(weight, torch.tensor([2])) and weight.dtype == torch.long
    assert stats["loss"].shape == (1,) and torch.isfinite(loss)
    assert espnet2_asr_model.force_gatherable is force_gatherable
    with pytest.raises(AssertionError):  # espnet2's check: a length a clip
        model(speech=speech, speech_lengths=torch.tensor([16000]),
              text=torch.tensor([[3, 4]]), text_lengths=torch.tensor([2]))
    assert espnet2_asr_model.force_gatherable is force_gatherable
