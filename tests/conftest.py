"""Shared fixtures: a small synthetic Common Voice release and a tiny upstream, made once a session."""

from __future__ import annotations

from pathlib import Path

import pytest

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
