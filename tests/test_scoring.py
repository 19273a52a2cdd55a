"""Tests for cvasr.scoring.sclite: hand-computed cases, then oracle tests against NIST sclite."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from cvasr.scoring import sclite as scoring
from cvasr.scoring.sclite import AlignOp, Counts, align, parse_sclite_counts, score

HAVE_SCLITE = not (shutil.which("sclite") is None and not os.path.exists("/usr/lib/sctk/bin/sclite"))
needs_sclite = pytest.mark.skipif(not HAVE_SCLITE, reason="NIST sclite not installed (Debian package sctk)")


def ops(ref: str, hyp: str) -> str:
    return "".join(o.op for o in align(ref.split(), hyp.split()))


def write_text(path: Path, utts: dict[str, list[str]]) -> Path:
    path.write_text("".join(f"{u} {' '.join(w)}".rstrip() + "\n" for u, w in utts.items()), encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# hand-computed alignments (sub 4, ins 3, del 3; ties: diagonal, insertion, deletion from the end)


@pytest.mark.parametrize(
    "ref, hyp, expected",
    [
        ("ঘৰ কিতাপ গুৱাহাটী", "ঘৰ কিতাপ গুৱাহাটী", "CCC"),  # identical
        ("ঘৰ কিতাপ গুৱাহাটী", "পানী ভাত মাছ", "SSS"),  # all substituted
        ("ঘৰ কিতাপ গুৱাহাটী", "", "DDD"),  # empty hypothesis
        ("", "ঘৰ কিতাপ", "II"),  # empty reference with insertions
        ("", "", ""),
        ("ঘৰ কিতাপ", "আজি ঘৰ কিতাপ কালি", "ICCI"),  # insertions at both ends
        ("a b", "b a", "DCI"),  # D+I (6) beats S+S (8); insertion kept at the end
        ("a a b", "a b b", "CSC"),  # repeated words
        ("a a b", "a b", "DCC"),  # the first 'a' is the deleted one
        ("a b", "c", "DS"),
        ("a x y", "p q a", "SSS"),  # 3S = 2I+C+2D = 12: the diagonal wins
        ("hello b", "hi there b", "ISC"),
        ("হ'ব হ'ব হ'ব", "হ'ব হ'ব", "DCC"),
    ],
)
def test_align_hand_computed(ref: str, hyp: str, expected: str) -> None:
    assert ops(ref, hyp) == expected


def test_align_keeps_tokens_and_is_ascii_case_insensitive() -> None:
    got = align(["Hello", "Ábc", "ঘৰ"], ["hello", "ábc", "ঘৰ"])
    assert got == [AlignOp("C", "Hello", "hello"), AlignOp("S", "Ábc", "ábc"), AlignOp("C", "ঘৰ", "ঘৰ")]


def test_counts_and_percentages() -> None:
    c = Counts(snt=2, wrd=80, corr=51, sub=20, dele=9, ins=3, serr=1)
    assert c.err == 32
    assert c.pct("err") == pytest.approx(40.0)
    assert c.pct("serr") == 50.0
    assert Counts(snt=1).pct("corr") == 0.0
    assert (c + c).as_dict()["del"] == 18


def test_tokenize_char_uses_space_token() -> None:
    assert scoring.tokenize(["ab", "cd"], "char") == ["a", "b", "<space>", "c", "d"]
    assert scoring.tokenize(["ঘৰ", "হ'ব"], "char") == ["ঘ", "ৰ", "<space>", "হ", "'", "ব"]
    assert scoring.tokenize([], "char") == []
    with pytest.raises(ValueError):
        scoring.tokenize(["a"], "bpe")


@pytest.mark.parametrize(
    "trn_id, spk",
    [("spkA-u1", "spka"), ("spk_x-u3", "spk_x"), ("mid_a_b", "mid"), ("x-y_z-w", "x"), ("-lead", ""), ("plain", "plain")],
)
def test_sclite_speaker_rule(trn_id: str, spk: str) -> None:
    assert scoring.sclite_speaker(trn_id) == spk


# --------------------------------------------------------------------------
# score(): files, warnings, errors, layout


def test_score_writes_trn_and_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = write_text(tmp_path / "ref", {"spk1-a": ["a", "b"], "spk1-b": ["ঘৰ"], "spk2_c": [], "spk2_d": ["x"]})
    hyp = write_text(tmp_path / "hyp", {"spk1-a": ["b", "a"], "spk2_c": ["q"], "spk2_d": ["X"]})
    s = score(ref, hyp, tmp_path / "out")
    assert "spk1-b" in capsys.readouterr().err
    assert (tmp_path / "out" / "ref.trn").read_text(encoding="utf-8").splitlines() == [
        "a b (spk1-spk1-a)",
        "ঘৰ (spk1-spk1-b)",
        "(spk2-spk2_c)",
        "x (spk2-spk2_d)",
    ]
    assert (tmp_path / "out" / "hyp.trn").read_text(encoding="utf-8").splitlines()[1] == "(spk1-spk1-b)"
    assert s.total == Counts(snt=4, wrd=4, corr=2, sub=0, dele=2, ins=2, serr=3)
    assert s.speakers == {
        "spk1": Counts(snt=2, wrd=3, corr=1, sub=0, dele=2, ins=1, serr=2),
        "spk2": Counts(snt=2, wrd=1, corr=1, sub=0, dele=0, ins=1, serr=1),
    }
    assert s.err == s.wer == 100.0
    assert s.sum_avg_line == "| Sum/Avg|    4      4 | 50.0    0.0   50.0   50.0  100.0   75.0 |"
    text = (tmp_path / "out" / "result.txt").read_text(encoding="utf-8")
    dump = text[text.index("id: (spk1-spk1-a)") :]
    assert dump.startswith(
        "id: (spk1-spk1-a)\nScores: (#C #S #D #I) 1 0 1 1\nREF:  A b * \nHYP:  * b A \nEval: D   I \n\n"
    )
    assert "id: (spk2-spk2_d)\nScores: (#C #S #D #I) 1 0 0 0\nREF:  x \nHYP:  x \n" in text
    assert "| spk1   |    2      3 | 33.3    0.0   66.7   33.3  100.0  100.0 |" in text
    assert "INSERTIONS" in text and "DELETIONS" in text and "CONFUSION PAIRS" in text
    parsed = parse_sclite_counts(tmp_path / "out" / "result.txt")
    assert parsed["sum"] == s.total.as_dict()
    assert parsed["speakers"]["spk2"] == s.speakers["spk2"].as_dict()
    assert parsed["utterances"]["spk1-spk1-a"]["del"] == 1


def test_score_hyp_only_utterance_is_an_error(tmp_path: Path) -> None:
    ref = write_text(tmp_path / "ref", {"s-1": ["a"]})
    hyp = write_text(tmp_path / "hyp", {"s-1": ["a"], "s-2": ["b"]})
    with pytest.raises(ValueError, match="s-2"):
        score(ref, hyp, tmp_path / "out")


def test_score_utt2spk_and_char_unit(tmp_path: Path) -> None:
    ref = write_text(tmp_path / "ref", {"u1": ["ab", "cd"], "u2": ["ঘৰ"]})
    hyp = write_text(tmp_path / "hyp", {"u1": ["abcd"], "u2": ["ঘৰ"]})
    (tmp_path / "utt2spk").write_text("u1 Alice\nu2 bob\n", encoding="utf-8")
    s = score(ref, hyp, tmp_path / "out", unit="char", utt2spk=tmp_path / "utt2spk")
    assert (tmp_path / "out" / "ref.trn").read_text(encoding="utf-8").splitlines()[0] == "a b <space> c d (Alice-u1)"
    assert s.speakers["alice"] == Counts(snt=1, wrd=5, corr=4, sub=0, dele=1, ins=0, serr=1)
    assert s.total.wrd == 7 and s.unit == "char"
    with pytest.raises(ValueError):
        score(ref, hyp, tmp_path / "out2", unit="bpe")


def test_rounding_is_sclite_s(tmp_path: Path) -> None:
    # 51/80 prints 63.7 and 29/80 prints 36.3 in sclite (n/d*100, then half up)
    ref = write_text(tmp_path / "ref", {"s-1": ["a"] * 80})
    hyp = write_text(tmp_path / "hyp", {"s-1": ["a"] * 51 + ["b"] * 29})
    s = score(ref, hyp, tmp_path / "out")
    assert s.sum_avg_line == "| Sum/Avg|    1     80 | 63.7   36.3    0.0    0.0   36.3  100.0 |"


def test_missing_sclite_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(scoring.shutil, "which", lambda name: None)
    monkeypatch.setattr(scoring, "SCLITE_DEFAULT_PATH", str(tmp_path / "nope"))
    with pytest.raises(scoring.SCliteNotFoundError, match="sctk"):
        scoring.run_sclite(tmp_path / "r", tmp_path / "h", tmp_path / "o")


# --------------------------------------------------------------------------
# oracle: the real sclite on the same trn files

WORDS = (
    "ঘৰ কিতাপ গুৱাহাটী ৰাতিপুৱা হ'ব অসম মানুহ পানী ভাত আজি কালি বৰষুণ নদী ব্ৰহ্মপুত্ৰ "
    "বিদ্যালয় ছাত্ৰ শিক্ষক গাঁও চহৰ বাট গছ ফুল চাহ বাগিচা মাছ দেউতা মা ভাই ভনী বন্ধু "
    "কাম সময় দিন ৰাতি ভাল ডাঙৰ সৰু নতুন আৰু কিন্তু OK Bihu"
).split()
SPEAKERS = ("0a1b2c", "f00d", "spk", "Speaker7", "x9", "c0ffee", "dd")


def random_set(seed: int) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, str] | None]:
    """20-40 utterances, a few speakers, random substitutions/insertions/deletions/repeats."""
    rng = random.Random(seed)
    spks = rng.sample(SPEAKERS, rng.randint(1, 6))
    ref: dict[str, list[str]] = {}
    hyp: dict[str, list[str]] = {}
    utt2spk: dict[str, str] = {}
    use_utt2spk = seed % 3 == 0
    for i in range(rng.randint(20, 40)):
        spk = rng.choice(spks)
        uttid = f"utt{i:03d}_{spk}" if use_utt2spk else f"{spk}{rng.choice('-_')}{i:04d}"
        utt2spk[uttid] = spk
        r = [rng.choice(WORDS) for _ in range(rng.choice([0, 1, 3, 8, 12, 20]))]
        style = rng.random()
        h: list[str] = []
        if style < 0.08:
            h = []  # empty hypothesis
        elif style < 0.15:
            h = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]  # unrelated
        else:
            for w in r:
                x = rng.random()
                if x < 0.1:
                    continue  # deletion
                if x < 0.2:
                    h.append(rng.choice(WORDS))  # substitution
                elif x < 0.27:
                    h += [w, w]  # repeat
                elif x < 0.33:
                    h += [w, rng.choice(WORDS)]  # insertion
                elif x < 0.36:
                    h.append(w.lower() if w.isascii() else w[:-1] or w)  # case / near miss
                else:
                    h.append(w)
            if rng.random() < 0.2:
                h.insert(0, rng.choice(WORDS))
        ref[uttid] = r
        if rng.random() > 0.03:  # occasionally missing: scored as empty
            hyp[uttid] = h
    return ref, hyp, (utt2spk if use_utt2spk else None)


def compare_with_sclite(tmp: Path, ref: dict, hyp: dict, utt2spk: dict | None, unit: str) -> None:
    ours = score(write_text(tmp / "ref", ref), write_text(tmp / "hyp", hyp), tmp / "out", unit=unit, utt2spk=utt2spk)
    scoring.run_sclite(tmp / "out" / "ref.trn", tmp / "out" / "hyp.trn", tmp / "sclite.txt")
    theirs = parse_sclite_counts(tmp / "sclite.txt")
    assert theirs["sum"] == ours.total.as_dict()
    assert theirs["speakers"] == {k: v.as_dict() for k, v in ours.speakers.items()}
    assert len(theirs["utterances"]) == len(ours.utterances)
    for u in ours.utterances:
        got = theirs["utterances"][scoring.ascii_lower(u.trn_id)]
        c = u.counts
        assert (got["corr"], got["sub"], got["del"], got["ins"]) == (c.corr, c.sub, c.dele, c.ins), u.uttid
        assert [op for op, _, _ in got["ops"]] == [o.op for o in u.ops], u.uttid
    # and the report is sclite's, byte for byte, up to our extra section
    text = (tmp / "out" / "result.txt").read_text(encoding="utf-8")
    mine = text[: text.index("\n\n\t\tMOST FREQUENT ERRORS")]
    assert mine == (tmp / "sclite.txt").read_text(encoding="utf-8")


@needs_sclite
@pytest.mark.parametrize("unit", ["word", "char"])
@pytest.mark.parametrize("seed", range(32))
def test_oracle_random_assamese_sets(tmp_path: Path, seed: int, unit: str) -> None:
    ref, hyp, utt2spk = random_set(seed)
    compare_with_sclite(tmp_path, ref, hyp, utt2spk, unit)


@needs_sclite
def test_oracle_tie_breaking_small_vocabulary(tmp_path: Path) -> None:
    """Thousands of short utterances over three words: many equal-cost alignments."""
    rng = random.Random(1234)
    ref: dict[str, list[str]] = {}
    hyp: dict[str, list[str]] = {}
    for i in range(3000):
        vocab = ["ক", "খ", "গ"][: rng.randint(1, 3)]
        ref[f"s{i % 7}-{i:05d}"] = [rng.choice(vocab) for _ in range(rng.randint(0, 9))]
        hyp[f"s{i % 7}-{i:05d}"] = [rng.choice(vocab + ["ঘ"]) for _ in range(rng.randint(0, 9))]
    compare_with_sclite(tmp_path, ref, hyp, None, "word")


@needs_sclite
@pytest.mark.parametrize(
    "case",
    ["zero_word_speakers", "wide_columns", "long_utterance", "many_speakers"],
)
def test_oracle_layout_corner_cases(tmp_path: Path, case: str) -> None:
    rng = random.Random(case)
    ref: dict[str, list[str]] = {}
    hyp: dict[str, list[str]] = {}
    if case == "zero_word_speakers":
        # sclite's statistics rows mishandle speakers without reference words; we copy that
        for k, (n, extra) in enumerate([(0, 2), (5, 0), (0, 3), (10, 1), (0, 0), (7, 2)]):
            r = [rng.choice(WORDS) for _ in range(n)]
            ref[f"z{k}-1"] = r
            hyp[f"z{k}-1"] = r[1:] + [rng.choice(WORDS) for _ in range(extra)]
    elif case == "wide_columns":
        ref["a-1"], hyp["a-1"] = ["ঘৰ"], ["ঘৰ"] + ["মাছ"] * 24  # Ins 2400.0%
        for i in range(1100):  # #Snt and #Wrd past the usual widths
            r = [rng.choice(WORDS) for _ in range(rng.randint(1, 12))]
            ref[f"b-{i}"], hyp[f"b-{i}"] = r, [w if rng.random() < 0.8 else rng.choice(WORDS) for w in r]
    elif case == "long_utterance":  # the dump wraps lines at 999 bytes
        r = [rng.choice(WORDS) for _ in range(160)]
        ref["a-1"], hyp["a-1"] = r, [w if rng.random() < 0.85 else rng.choice(WORDS) for w in r]
    else:
        for i in range(120):
            ref[f"s{i:03d}-1"], hyp[f"s{i:03d}-1"] = ["ঘৰ", "ভাত"], ["ঘৰ", "মাছ" if i % 3 else "ভাত"]
    for unit in ("word", "char"):
        (tmp_path / unit).mkdir()
        compare_with_sclite(tmp_path / unit, ref, hyp, None, unit)


@needs_sclite
def test_engine_sclite_matches_python(tmp_path: Path) -> None:
    ref_d, hyp_d, utt2spk = random_set(99)
    ref, hyp = write_text(tmp_path / "ref", ref_d), write_text(tmp_path / "hyp", hyp_d)
    a = score(ref, hyp, tmp_path / "py", unit="char", utt2spk=utt2spk)
    b = score(ref, hyp, tmp_path / "sc", unit="char", utt2spk=utt2spk, engine="sclite")
    assert b.engine == "sclite"
    assert (a.total, a.speakers, a.err) == (b.total, b.speakers, b.err)
    assert [u.counts for u in a.utterances] == [u.counts for u in b.utterances]
    assert "MOST FREQUENT ERRORS" in (tmp_path / "sc" / "result.txt").read_text(encoding="utf-8")
