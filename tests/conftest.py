"""Shared fixtures: a small synthetic Common Voice release and a tiny upstream, made once a session."""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs" / "as_cv7"


@pytest.fixture(scope="session")
def small_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cvasr.corpora.demo import write_demo_corpus

    out = tmp_path_factory.mktemp("cv") / "as"
    write_demo_corpus(out, seed=0, size="small", show_progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cvasr.models.upstream import write_random_upstream

    path = tmp_path_factory.mktemp("upstream") / "tiny.pt"
    write_random_upstream("tiny", path)
    return path


def xlsr_model(tmp_path: Path, upstream: Path, ctc_impl: str = "torch") -> torch.nn.Module:
    """The XLS-R config's model (tiny upstream) with `model_conf ctc_impl=...`, trainable as
    stage 4 leaves it."""
    from cvasr.training.stages import resolve_config
    from cvasr.training.task import CvasrASRTask

    resolved = tmp_path / "xlsr.yaml"
    resolve_config(RECIPE / "conf" / "train_xlsr300m_ctc.yaml", str(upstream), tmp_path / "dl",
                   resolved)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>", "<space>", *"abcdefgh", "<sos/eos>"]) + "\n")
    args = CvasrASRTask.get_parser().parse_args(
        ["--config", str(resolved), "--token_list", str(tokens), "--token_type", "char",
         "--output_dir", str(tmp_path / "exp"), "--model_conf", f"ctc_impl={ctc_impl}"])
    torch.manual_seed(0)
    model = CvasrASRTask.build_model(args)
    for name, p in model.named_parameters():
        if any(name == t or name.startswith(t + ".") for t in args.freeze_param):
            p.requires_grad = False
    return model.train()


@contextlib.contextmanager
def triton_interpreted(module_name: str) -> Iterator[ModuleType]:
    """The module reloaded with its Triton kernels run by Triton's interpreter (on the CPU):
    TRITON_INTERPRET set while the caller's tests run (Triton reads it when a kernel is defined
    and when it runs), then restored and the module reloaded as it was."""
    module = importlib.import_module(module_name)
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield importlib.reload(module)
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before
        importlib.reload(module)
