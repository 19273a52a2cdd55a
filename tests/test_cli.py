"""The `cvasr` console script: every subcommand has help, errors are one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cvasr.cli import build_parser, main

SUBCOMMANDS = ["demo-corpus", "make-upstream", "check-release", "extract-release",
               "check-upstream", "fetch-upstream", "prepare-data", "dump", "validate-data-dir",
               "make-tokens", "collect-stats", "train", "decode", "transcribe", "results", "score",
               "defaults", "tune-lm", "make-lm", "import-hf", "import-hf-upstream", "export-hf",
               "export-onnx", "export-espnet"]


def test_help_lists_every_subcommand() -> None:
    out = subprocess.run([sys.executable, "-m", "cvasr.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in SUBCOMMANDS:
        assert name in out
    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert sorted(choices) == sorted(SUBCOMMANDS)
    for name, sub in choices.items():
        assert len(sub.description or "") > 30, f"{name} has no real description"


def test_user_errors_are_one_line_without_traceback(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-release", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cvasr check-release: error: Common Voice release folder")
    assert "Traceback" not in err


def test_score_prints_sum_line_and_writes_sclite_files(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    ref, hyp = tmp_path / "ref", tmp_path / "hyp"
    ref.write_text("s1-u1 ঘৰ কিতাপ\ns1-u2 আজি বতৰ ভাল\n", encoding="utf-8")
    hyp.write_text("s1-u1 ঘৰ কলম\ns1-u2 আজি ভাল\n", encoding="utf-8")
    assert main(["score", "--ref", str(ref), "--hyp", str(hyp), "--out", str(tmp_path / "w")]) == 0
    assert capsys.readouterr().out == \
        "WER  40.0  (Corr 60.0 Sub 20.0 Del 20.0 Ins 0.0, 2 utterances, 5 words)\n"
    assert {p.name for p in (tmp_path / "w").iterdir()} == {"ref.trn", "hyp.trn", "result.txt"}
    assert "| Sum/Avg|    2      5 | 60.0   20.0   20.0    0.0   40.0  100.0 |" in \
        (tmp_path / "w" / "result.txt").read_text(encoding="utf-8")
    # labelled, in characters, each space a <space> token: 8 + 11 reference characters;
    # কিতাপ -> কলম costs 2 substitutions and 2 deletions, the missing "বতৰ " 4 deletions
    assert main(["score", "--ref", str(ref), "--hyp", str(hyp), "--out", str(tmp_path / "c"),
                 "--unit", "char", "--label", "dev  CTC alone"]) == 0
    assert capsys.readouterr().out == ("dev  CTC alone  CER  42.1  (Corr 57.9 Sub 10.5 Del 31.6 "
                                       "Ins 0.0, 2 utterances, 19 characters)\n")
    assert (tmp_path / "w" / "hyp.trn").read_text(encoding="utf-8") == \
        "ঘৰ কলম (s1-s1-u1)\nআজি ভাল (s1-s1-u2)\n"


def test_score_applies_the_same_normaliser_to_both_sides(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    ref, hyp = tmp_path / "ref", tmp_path / "hyp"
    # Punctuation, a decomposed nukta letter, Bengali ra and a curly apostrophe in the reference;
    # the hypothesis spells the same words canonically.
    ref.write_text("s1-u1 “মই ঘ\u09b0লৈ গ’লোঁ।”\ns1-u2 খা\u09af\u09bc।\n", encoding="utf-8")
    hyp.write_text("s1-u1 মই ঘৰলৈ গ'লোঁ\ns1-u2 খা\u09df\n", encoding="utf-8")
    assert main(["score", "--ref", str(ref), "--hyp", str(hyp), "--out", str(tmp_path / "raw")]) == 0
    assert capsys.readouterr().out.strip() == \
        "WER 100.0  (Corr 0.0 Sub 100.0 Del 0.0 Ins 0.0, 2 utterances, 4 words)"  # raw: all differ
    assert main(["score", "--ref", str(ref), "--hyp", str(hyp), "--out", str(tmp_path / "norm"),
                 "--lang", "as"]) == 0
    assert capsys.readouterr().out.strip() == \
        "WER   0.0  (Corr 100.0 Sub 0.0 Del 0.0 Ins 0.0, 2 utterances, 4 words)"


def test_decode_nj_sets_cpu_threads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    before = torch.get_num_threads()
    line = ["decode", "--model", str(tmp_path), "--data-dir", str(tmp_path), "--out", str(tmp_path)]
    try:
        # No model here, so decoding stops at loading it: after --nj took effect.
        assert main([*line, "--nj", "3"]) == 1
        assert "no trained model" in capsys.readouterr().err
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert main([*line, "--nj", "0"]) == 1
    assert capsys.readouterr().err.strip() == "cvasr decode: error: --nj must be at least 1, got 0"


def test_defaults_are_the_packages(capsys: pytest.CaptureFixture[str]) -> None:
    from cvasr import defaults
    from cvasr.data.dump import DumpConfig

    assert main(["defaults"]) == 0
    lines = dict(line.split("=") for line in capsys.readouterr().out.splitlines())
    assert lines == {"max_drop": "0.05", "min_duration": "0.1", "max_duration": "20",
                     "token_type": "char", "nbpe": "150", "lm_order": "4"}
    assert DumpConfig().max_drop == defaults.MAX_DROP
    dump_args = build_parser().parse_args(["dump", "--data-dir", "d", "--dump-dir", "o"])
    assert (dump_args.min_duration, dump_args.max_duration) == (defaults.MIN_DURATION,
                                                                defaults.MAX_DURATION)
