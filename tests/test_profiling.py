"""Profiling a few steps of a training run (cvasr.training.profiling)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

from cvasr.training.profiling import SKIPPED_STEPS, profiled


def test_profiles_the_steps_after_the_skipped_ones_and_passes_every_item(tmp_path: Path) -> None:
    out = tmp_path / "profile" / "epoch1_rank0"
    items = list(range(SKIPPED_STEPS + 5))
    seen = []
    x = torch.arange(1.0, 9.0)
    wrapped = profiled(items, out, steps=2, cuda=False)
    assert len(wrapped) == len(items)  # read by the sync-free loop (under DDP, to end together)
    for item in wrapped:
        seen.append(item)
        # a different op in each step: the profile shows exactly the profiled steps' ops
        op = {SKIPPED_STEPS - 1: torch.cumprod, SKIPPED_STEPS: torch.cumsum,
              SKIPPED_STEPS + 1: torch.logcumsumexp, SKIPPED_STEPS + 2: torch.cummax}.get(item)
        if op is not None:
            op(x, 0)
    assert seen == items
    table = out.with_suffix(".txt").read_text()
    assert "aten::cumsum" in table and "aten::logcumsumexp" in table
    assert "aten::cumprod" not in table and "aten::cummax" not in table
    with gzip.open(out.with_suffix(".trace.json.gz")) as f:
        names = {e.get("name") for e in json.load(f)["traceEvents"]}
    assert "aten::cumsum" in names


def test_an_epoch_shorter_than_the_window_still_writes_its_profile(tmp_path: Path) -> None:
    out = tmp_path / "p"
    for item in profiled(range(SKIPPED_STEPS + 1), out, steps=10, cuda=False):
        if item == SKIPPED_STEPS:
            torch.cumsum(torch.ones(3), 0)
    assert "aten::cumsum" in out.with_suffix(".txt").read_text()


def _read_a_value_on_the_host(x: torch.Tensor) -> float:
    return x.sum().item()


def test_the_profile_names_the_python_stack_of_each_host_sync(tmp_path: Path) -> None:
    out = tmp_path / "p"
    for item in profiled(range(SKIPPED_STEPS + 3), out, steps=2, cuda=False):
        if item >= SKIPPED_STEPS:  # two profiled steps, one value read each; the third is not
            _read_a_value_on_the_host(torch.ones(4))
    section = out.with_suffix(".txt").read_text().split("Host syncs by Python stack")[1]
    assert section.startswith(" (2 in all)")
    assert "aten::_local_scalar_dense: 2 calls" in section
    assert "_read_a_value_on_the_host" in section


def test_a_profile_without_host_syncs_says_so(tmp_path: Path) -> None:
    out = tmp_path / "p"
    for item in profiled(range(SKIPPED_STEPS + 1), out, steps=1, cuda=False):
        torch.cumsum(torch.ones(3), 0)
    assert "Host syncs by Python stack (0 in all)" in out.with_suffix(".txt").read_text()
