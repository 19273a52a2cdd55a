"""The training-speed benchmark runs end to end (tiny upstream, CPU) and records what NOTES.md cites."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_throughput_smoke_run_writes_comparable_rows(tmp_path: Path) -> None:
    out = tmp_path / "throughput.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "train_throughput.py"), "--arch", "tiny",
         "--device", "cpu", "--clips", "12", "--epochs", "2", "--num-workers", "0",
         "--only", "ours_6", "ours_7", "--try", "no fused Adam=--optim_conf fused=false",
         "--work", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["failed"] == {}
    assert list(result["runs"]) == ["ours_6", "ours_7", "try_1"]
    assert result["speedup_vs_seed_stack"] is None  # no seed rows were run
    rows = result["runs"]
    for row in rows.values():
        assert len(row["epochs"]) == 2 and row["audio_seconds_per_s"] > 0
        assert {"loss_ctc", "forward_time", "backward_time", "iter_time"} <= set(row["epochs"][0])
    # the conv-feature cache (row 7) changes no number that is learned (row 6 is without it)
    assert [e["loss_ctc"] for e in rows["ours_7"]["epochs"]] == pytest.approx(
        [e["loss_ctc"] for e in rows["ours_6"]["epochs"]], rel=1e-5)
    assert "(b) + frozen conv features cached (= committed config)" in run.stdout
