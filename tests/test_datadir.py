"""The data-dir validator finds each kind of inconsistency, with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvasr.cli import main
from cvasr.data.datadir import Utterance, validate_data_dir, write_data_dir
from cvasr.data.kaldi import read_table


@pytest.fixture
def good_dir(tmp_path: Path) -> Path:
    audio = tmp_path / "a.flac"
    audio.write_bytes(b"x")
    utts = [Utterance(f"{spk}-{n}", spk, str(audio), f"ঘৰ {n}", f"ঘৰ {n}।", "m", 1.5)
            for spk in ("s1", "s2") for n in ("u1", "u2")]
    d = tmp_path / "train"
    write_data_dir(d, utts)
    return d


def test_written_dir_is_valid_and_sorted(good_dir: Path) -> None:
    assert validate_data_dir(good_dir) == []
    assert (good_dir / "spk2utt").read_text() == "s1 s1-u1 s1-u2\ns2 s2-u1 s2-u2\n"
    assert read_table(good_dir / "text.orig")["s1-u1"] == "ঘৰ u1।"


def rewrite(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")


@pytest.mark.parametrize("edit, problem", [
    (lambda d: rewrite(d / "text", "s1-u1 ঘৰ u1\ns1-u2 ঘৰ u2\n", "s1-u2 ঘৰ u2\ns1-u1 ঘৰ u1\n"),
     "text:2: not sorted (s1-u1 after s1-u2)"),
    (lambda d: rewrite(d / "utt2spk", "s2-u2 s2", "s2-u2 s1"), "spk2utt: does not match utt2spk"),
    (lambda d: rewrite(d / "text", "s2-u2 ঘৰ u2\n", ""), "text: ids differ from utt2spk: "
                                                        "1 utt2spk ids missing (first s2-u2)"),
    (lambda d: rewrite(d / "text", "s2-u2 ঘৰ u2", "s2-u2 ঘৰ u2\ns2-u2 ঘৰ u2"),
     "text:5: duplicate key s2-u2"),
    (lambda d: rewrite(d / "wav.scp", "s1-u1 ", "s1-u1 sox x.mp3 -t wav - |\ns1-u1x "),
     "maps to a command, not a file"),
    (lambda d: (d / "spk2utt").unlink(), "spk2utt: missing"),
    (lambda d: rewrite(d / "utt2dur", "s1-u1 1.500", "s1-u1 -2"), "utt2dur: s1-u1 has invalid value '-2'"),
    (lambda d: rewrite(d / "text", "s1-u1 ঘৰ u1", "s1-u1"), "text:1: s1-u1 has no value"),
])
def test_each_defect_is_found(good_dir: Path, edit, problem: str) -> None:
    edit(good_dir)
    problems = validate_data_dir(good_dir)
    assert any(problem in p for p in problems), problems


def test_missing_audio_and_cli_exit_status(good_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate-data-dir", str(good_dir)]) == 0
    assert "valid" in capsys.readouterr().out
    (tmp_path / "a.flac").unlink()
    problems = validate_data_dir(good_dir)
    assert len(problems) == 4 and all("a.flac does not exist" in p for p in problems)
    assert validate_data_dir(good_dir, check_files=False) == []
    assert main(["validate-data-dir", str(good_dir)]) == 1
    err = capsys.readouterr().err
    assert f"{good_dir / 'wav.scp'}:1: s1-u1: audio file" in err and "4 problem(s)" in err
