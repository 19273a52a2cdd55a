"""The stall tracer writes every thread's stack while the next epoch does not start, and nothing
for an epoch that starts in time."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cvasr.training.stalls import StallTracer


def _wait_for(path: Path, text: str, seconds: float = 20.0) -> str:
    """The file's text once it holds `text` (a stall of the test's own making lasts until then);
    a dump may still be being written."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        content = path.read_text()
        if text in content:
            return content
        time.sleep(0.01)
    raise AssertionError(f"{text!r} not written to {path} in {seconds} s")


def test_a_stall_between_epochs_dumps_every_threads_stack(tmp_path: Path) -> None:
    path = tmp_path / "stall_traces.txt"
    tracer = StallTracer(path, after=0.05)
    helper_waits = threading.Event()
    helper = threading.Thread(target=helper_waits.wait, name="checkpoint-writer-stand-in")
    helper.start()
    try:
        tracer.epoch_ended(7)  # then nothing: this thread stalls until the dump is begun
        _wait_for(path, "--- epoch 7 ended")
        tracer.epoch_starts()
    finally:
        helper_waits.set()
        helper.join()
        tracer.close()  # the dump written whole (it may have been read half-written above)
    content = path.read_text()
    assert "epoch 7 ended at " in content and "epoch 8 has not started" in content
    dump = content.split("--- epoch 7 ended", 1)[1]
    assert "Thread MainThread" in dump and "test_a_stall_between_epochs_dumps" in dump
    assert "Thread checkpoint-writer-stand-in" in dump and "in wait" in dump
    assert tracer.dumps >= 1


def test_an_epoch_that_starts_in_time_leaves_no_stacks(tmp_path: Path) -> None:
    path = tmp_path / "stall_traces.txt"
    tracer = StallTracer(path, after=30.0)
    for epoch in (1, 2, 3):
        tracer.epoch_ended(epoch)
        tracer.epoch_starts()
    tracer.close()
    content = path.read_text()
    assert [line.split(" ended")[0] for line in content.splitlines()] == [
        "epoch 1", "epoch 2", "epoch 3"]
    assert tracer.dumps == 0
    with pytest.raises(ValueError, match="trace_stalls_after: 0 is not a positive"):
        StallTracer(tmp_path / "x.txt", after=0)


def test_after_the_training_the_stacks_go_on_until_the_process_exits(tmp_path: Path) -> None:
    """The last epoch's dumps say the training goes on after it; once the training ends, a slow
    exit (here an atexit handler that sleeps) gets its stacks once a second, even with a
    threshold of milliseconds, and the process exits with the watchdog still running."""
    path = tmp_path / "stall_traces.txt"
    child = f"""
import atexit, time
from cvasr.training.stalls import StallTracer

def slow_exit_handler():
    time.sleep(1.5)

tracer = StallTracer({str(path)!r}, after=0.01, last_epoch=2)
tracer.epoch_ended(1)
tracer.epoch_starts()
tracer.epoch_ended(2)
time.sleep(0.05)
atexit.register(slow_exit_handler)
tracer.training_ended()
"""
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60)
    content = path.read_text()
    assert "--- epoch 2 ended" in content and "the training goes on after its last epoch" in content
    assert "epoch 3 has not started" not in content and "--- epoch 1 ended" not in content
    assert "stacks follow every 1 s until the process exits" in content
    exits = content.split("--- the training ended ")[1:]
    assert exits and all("the process has not exited" in dump for dump in exits)
    ago = [float(dump.split(" s ago", 1)[0]) for dump in exits]  # a second apart at least
    assert ago[0] >= 1.0 and all(b - a >= 0.999 for a, b in zip(ago, ago[1:]))  # (rounding)
    assert "in slow_exit_handler" in exits[0]
