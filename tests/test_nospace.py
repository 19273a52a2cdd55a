"""A full disk is reported as "no space left on device writing PATH": by the message logic, by a
real ENOSPC from /dev/full, and by every stage of run.sh on a tiny tmpfs."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from conftest import RECIPE
from cvasr.cli import main
from cvasr.nospace import no_space_message


def test_the_message_names_the_file_or_the_output(tmp_path: Path) -> None:
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/w/dump/train/data/wav.ark")
    assert no_space_message(enospc, [Path("/w/dump")]) == \
        "no space left on device writing /w/dump/train/data/wav.ark"
    unnamed = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a flushed buffer names no file
    assert no_space_message(unnamed, [Path("/w/dump")]) == "no space left on device writing /w/dump"
    try:
        try:
            raise unnamed
        except OSError as err:
            raise RuntimeError("could not finish the dump") from err
    except RuntimeError as chained:
        assert no_space_message(chained, [Path("/w/dump")]) == \
            "no space left on device writing /w/dump"
    child = RuntimeError("espnet2 exited with status 1 (OSError: [Errno 28] No space left on "
                         "device); see exp/train.log")
    assert no_space_message(child, [Path("/w/exp")]) == "no space left on device writing /w/exp"
    # other errors, on a filesystem with room, stay what they are
    assert no_space_message(RuntimeError("System error."), [tmp_path]) is None
    assert no_space_message(OSError(errno.EACCES, "Permission denied", "/x"), [tmp_path]) is None


def test_a_real_enospc_from_dev_full(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """/dev/full fails every write with ENOSPC: a score whose report is written there."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this machine")
    ref, hyp, out = tmp_path / "ref", tmp_path / "hyp", tmp_path / "score"
    ref.write_text("s1-u1 ঘৰ কিতাপ\n", encoding="utf-8")
    hyp.write_text("s1-u1 ঘৰ কলম\n", encoding="utf-8")
    out.mkdir()
    (out / "result.txt").symlink_to("/dev/full")
    assert main(["score", "--ref", str(ref), "--hyp", str(hyp), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"cvasr score: error: no space left on device writing {out}"
    assert "OSError: [Errno 28] No space left on device" in err  # the traceback, for the log


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}): "
                    "the stages' full-disk messages are not tested")


def _fill(where: Path, leave: int = 0) -> Path:
    """A file that takes all but `leave` bytes of the filesystem."""
    st = os.statvfs(where)
    filler = where / "filler"
    size = st.f_bavail * st.f_frsize - leave
    subprocess.run(["fallocate", "-l", str(size), str(filler)], check=True)
    return filler


@pytest.mark.slow
def test_every_stage_says_its_disk_is_full(tmp_path: Path) -> None:
    work = tmp_path / "tmpfs"
    _mount_tmpfs(work, "64m")
    try:
        def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
            proc = subprocess.run([str(RECIPE / "run.sh"), "--demo", "true", "--demo_size",
                                   "small", "--work_dir", str(work), "--train_args",
                                   "--max_epoch 1 --batch_size 24", *args],
                                  capture_output=True, text=True, timeout=900)
            if check:
                assert proc.returncode == 0, proc.stdout + proc.stderr
            return proc

        run("--stop-stage", "4")
        outputs = {0: [work / "downloads" / "demo_cv7_as_small", work / "downloads" / "upstream"],
                   1: [work / "data" / "train"], 2: [work / "dump"],
                   3: [work / "data" / "token_list"],
                   4: [work / "exp" / "asr_train_demo_ctc_char"], 5: []}
        # last stage first: each removes outputs only the stages before it make. Stage 2 starts
        # writing and meets the wall mid-way (the ark); the others meet it at their first write.
        # Stages 2 and 0 must run again once there is room.
        for n, leave in ((5, 0), (4, 0), (3, 0), (2, 1 << 20), (1, 0), (0, 0)):
            subprocess.run(["rm", "-rf", *map(str, outputs[n]),
                            str(work / "exp" / "stage_records" / f"stage{n}.done")], check=True)
            filler = _fill(work, leave)
            failed = run("--stage", str(n), "--stop-stage", str(n), check=False)
            assert failed.returncode == 1, failed.stdout
            # what the stage said, before run.sh's FAILED line and the end of the log it shows
            console = failed.stdout.split(" FAILED (")[0]
            said = [line for line in console.splitlines() if "error:" in line]
            assert len(said) == 1 and ": error: no space left on device writing " \
                f"{work}/" in said[0], failed.stdout + failed.stderr
            assert f"FAILED (exit 1; no space left on device writing {work} (" in failed.stdout
            assert "Traceback" not in console + failed.stderr
            filler.unlink()
            if n in (0, 2):
                again = run("--stage", str(n), "--stop-stage", str(n))
                assert "): done" in again.stdout
    finally:
        subprocess.run(["umount", "-l", str(work)], check=False)
