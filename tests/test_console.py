"""The recipe's console: lines that matter to the console and the log, progress under run.sh,
one line an epoch, and no network at import (nltk)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO
from cvasr.training.epoch_lines import EpochLines, parse_results

# espnet2's own lines, from a demo run's train.log (the full demo corpus, 10 epochs)
STARTED = "[vm] 2026-11-30 02:07:53,124 (trainer:336) INFO: 1/10epoch started"
RESULTS = ("[vm] 2026-11-30 02:08:14,794 (trainer:394) INFO: 1epoch results: [train] "
           "iter_time=0.003, forward_time=0.135, loss_ctc=94.927, loss=94.927, "
           "backward_time=0.151, grad_norm=107.832, clip=100.000, loss_scale=1.000, "
           "optim_step_time=0.005, optim0_lr0=0.001, train_time=0.300, time=21.03 seconds, "
           "total_count=70, [valid] loss_ctc=74.529, cer_ctc=0.776, loss_att=nan, acc=nan, "
           "cer=nan, wer=nan, loss=74.529, wer_ctc=0.990, time=0.64 seconds, total_count=10")
BATCHES = ("[vm] 2026-11-30 02:07:56,782 (trainer:811) INFO: 1epoch:train:1-10batch: "
           "iter_time=0.003, forward_time=0.192, loss_ctc=135.735, loss=135.735")


def run_python(code: str, console: bool = True) -> tuple[str, str, str]:
    """Run `code` in a fresh interpreter with a console descriptor as run.sh gives one (a
    pipe here); return its stdout, stderr and what reached the console."""
    read, write = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != "CVASR_CONSOLE_FD"}
    env["PYTHONPATH"] = str(REPO / "src")
    if console:
        env["CVASR_CONSOLE_FD"] = str(write)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, pass_fds=(write,), timeout=600)
    os.close(write)
    with os.fdopen(read, encoding="utf-8") as f:
        seen = f.read()
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr, seen


def test_say_goes_to_the_log_and_the_console() -> None:
    code = """
        import warnings
        from cvasr.console import say, error
        print("library chatter")
        warnings.warn("a library warning")
        say("dumped audio in dump")
        error("cvasr x: error: broken")
    """
    out, err, seen = run_python(code)
    assert out == "library chatter\ndumped audio in dump\n"
    assert "a library warning" in err and err.endswith("cvasr x: error: broken\n")
    assert seen == "dumped audio in dump\ncvasr x: error: broken\n"
    # on its own (no run.sh), a command prints as any other: say to stdout, error to stderr
    out, err, seen = run_python(code, console=False)
    assert out == "library chatter\ndumped audio in dump\n" and seen == ""
    assert err.endswith("cvasr x: error: broken\n")


def test_progress_reaches_a_console_that_is_not_a_terminal() -> None:
    out, err, seen = run_python("""
        from cvasr.progress import progress
        assert list(progress(range(3), total=3, desc="dumping train", unit="clip",
                             interval=0)) == [0, 1, 2]
    """)
    lines = seen.splitlines()
    assert [line.split(",")[0] for line in lines[:3]] == [
        "dumping train: 1/3 clips", "dumping train: 2/3 clips", "dumping train: 3/3 clips"]
    assert lines[3].startswith("dumping train: 3/3 clips in ") and len(lines) == 4
    assert out.splitlines() == lines and err == ""  # the log has them all, in order


def test_epoch_lines_from_espnet2_output() -> None:
    now = iter([100.0, 105.0, 126.5]).__next__
    lines = EpochLines(clock=now)  # 100: created; 105: epoch 1 starts; 126.5: its results
    assert lines(STARTED) is None and lines(BATCHES) is None
    assert lines(RESULTS) == ("epoch 1/10  train loss 94.93  valid loss 74.53  CER 77.6%  "
                              "WER 99.0%  (21.5 s)")
    stats = parse_results(RESULTS.split("results: ")[1])
    assert stats["train"]["grad_norm"] == 107.832 and stats["valid"]["total_count"] == 10
    assert set(stats) == {"train", "valid"} and stats["valid"]["acc"] != stats["valid"]["acc"]


def test_a_deferred_module_loads_on_first_use() -> None:
    # `this` prints the Zen of Python when imported: deferred, it prints only when used
    out, _, _ = run_python("""
        import inspect, sys
        from cvasr.offline import DeferredModule, defer_import
        assert defer_import("this")
        import this
        assert isinstance(sys.modules["this"], DeferredModule)
        inspect.getmodule(inspect)  # reads __file__ of every module: must not load it
        print("imported")
        assert this.s.startswith("Gur Mra bs Clguba")
    """, console=False)
    assert out.startswith("imported\nThe Zen of Python")


@pytest.mark.slow
def test_importing_espnet2_attempts_no_download() -> None:
    """espnet2 imports g2p_en, which calls nltk.download at import: with cvasr imported first
    no socket is opened, no URL requested and nltk is not even imported."""
    code = """
        import sys
        events = []
        sys.addaudithook(lambda event, args: events.append(event) if event in (
            "socket.getaddrinfo", "socket.connect", "urllib.Request") else None)
        {first}
        import espnet2.tasks.asr
        from espnet2.text.build_tokenizer import build_tokenizer
        assert build_tokenizer("char").text2tokens("ক খ") == ["ক", "<space>", "খ"]
        print("network:", len(events), "nltk imported:", "nltk" in sys.modules)
    """
    out, err, _ = run_python(code.format(first="import cvasr"), console=False)
    assert "network: 0 nltk imported: False" in out and "nltk_data" not in out + err
    # the same without cvasr first: the download attempt this guards against
    out, err, _ = run_python(code.format(first="pass"), console=False)
    assert "network: 0" not in out and "nltk imported: True" in out
