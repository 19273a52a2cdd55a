"""The embedded demo corpus: Common Voice 7.0 layout, determinism, reuse, disjoint splits."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import unicodedata
from pathlib import Path

import pytest
import soundfile as sf

from cvasr.corpora.commonvoice import CV7_HEADER, SPLIT_FILES
from cvasr.corpora.demo import SIZES, plan_release, write_demo_corpus
from cvasr.corpora.demo_lexicon import make_sentences, precompose_nukta, vocabulary


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_header(small_release: Path) -> None:
    assert sorted(p.name for p in small_release.iterdir() if not p.name.startswith(".")) == \
        sorted(["clips", *SPLIT_FILES.values()])
    spec = SIZES["small"]
    expected = {"train": spec.train, "dev": spec.dev, "test": spec.test,
                "validated": spec.train + spec.dev + spec.test + spec.extra_validated,
                "other": spec.other, "invalidated": spec.invalidated}
    for name, filename in SPLIT_FILES.items():
        header = (small_release / filename).read_text(encoding="utf-8").splitlines()[0]
        assert header.split("\t") == list(CV7_HEADER)
        assert len(read_rows(small_release / filename)) == expected[name], name


def test_clips_are_48k_mono_mp3_and_decodable(small_release: Path) -> None:
    listed = {r["path"] for f in SPLIT_FILES.values() for r in read_rows(small_release / f)}
    on_disk = {p.name for p in (small_release / "clips").iterdir()}
    assert listed == on_disk
    for name in sorted(listed):
        info = sf.info(small_release / "clips" / name)
        assert info.format == "MP3" and info.samplerate == 48000 and info.channels == 1, name
        audio, rate = sf.read(small_release / "clips" / name)
        assert 1.0 < len(audio) / rate < 15.0, name
        assert abs(audio).max() > 0.05, f"{name} is silent"


def test_splits_are_sentence_and_speaker_disjoint(small_release: Path) -> None:
    splits = {s: read_rows(small_release / SPLIT_FILES[s]) for s in ("train", "dev", "test")}
    sentences = {s: {precompose_nukta(r["sentence"]) for r in rows} for s, rows in splits.items()}
    speakers = {s: {r["client_id"] for r in rows} for s, rows in splits.items()}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not sentences[a] & sentences[b], (a, b)
        assert not speakers[a] & speakers[b], (a, b)
    validated = {r["path"] for r in read_rows(small_release / "validated.tsv")}
    assert all(r["path"] in validated for rows in splits.values() for r in rows)


def test_full_size_plan_meets_the_corpus_spec() -> None:
    release = plan_release(seed=0, size="full")
    clips = {c.path: c for rows in release.values() for c in rows}
    assert len(clips) >= 700
    assert len({c.speaker.client_id for c in clips.values()}) >= 8
    split_sentences = [precompose_nukta(c.sentence) for s in ("train", "dev", "test")
                       for c in release[s]]
    assert len(set(split_sentences)) == len(split_sentences) >= 350
    text = "".join(c.sentence for c in clips.values())
    assert "ৰ" in text and "ৱ" in text and "র" not in text
    # Both ways of typing the nukta letters occur, as in real Common Voice text.
    assert "\u09df" in text and "\u09af\u09bc" in text
    assert all(len(c.speaker.client_id) == 128 for c in clips.values())


def test_same_seed_same_bytes_and_reuse(tmp_path: Path, small_release: Path) -> None:
    again = tmp_path / "again"
    write_demo_corpus(again, seed=0, size="small", show_progress=False)
    assert digest(again) == digest(small_release)

    clip = next((again / "clips").iterdir())
    before = {p.name: p.stat().st_mtime_ns for p in (again / "clips").iterdir()}
    clip.unlink()
    write_demo_corpus(again, seed=0, size="small", show_progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (again / "clips").iterdir()}
    assert {k: v for k, v in after.items() if k != clip.name} == \
        {k: v for k, v in before.items() if k != clip.name}, "existing clips were rewritten"
    assert digest(again) == digest(small_release), "a re-made clip differs"


def test_other_seed_differs_and_conflicting_reuse_is_refused(tmp_path: Path,
                                                              small_release: Path) -> None:
    other = tmp_path / "seed1"
    write_demo_corpus(other, seed=1, size="small", show_progress=False)
    assert (other / "train.tsv").read_bytes() != (small_release / "train.tsv").read_bytes()
    with pytest.raises(ValueError, match="seed=1 size=small"):
        write_demo_corpus(other, seed=2, size="small", show_progress=False)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a demo corpus"):
        write_demo_corpus(stray, seed=0, size="small", show_progress=False)


def test_sentences_are_deterministic_and_distinct() -> None:
    assert make_sentences(50, seed=3) == make_sentences(50, seed=3)
    assert make_sentences(50, seed=3) != make_sentences(50, seed=4)
    assert len(set(make_sentences(900, seed=0))) == 900


def test_vocabulary_is_assamese_script() -> None:
    for word in vocabulary():
        for ch in word:
            assert ch == "'" or "\u0980" <= ch <= "\u09ff", (word, unicodedata.name(ch))
        assert "\u09b0" not in word, f"{word} has Bengali ra"
        assert "\u09bc" not in word, f"{word} has a decomposed nukta"


# espeak-ng's phoneme output when it spells a word letter by letter instead of reading it.
_SPELLED = ("'akar", "ik,ar", "uk,ar", "'ekar", "b'indu", "(bn)")


def test_espeak_reads_every_word_rather_than_spelling_it() -> None:
    from cvasr.corpora.demo import _SPOKEN_RESPELLING

    words = sorted(vocabulary())
    spelled = []
    for word in words:
        phonemes = subprocess.run(["espeak-ng", "-v", "as", "-q", "-x", "--",
                                   word.translate(_SPOKEN_RESPELLING)],
                                  capture_output=True, text=True, check=True).stdout
        if any(marker in phonemes for marker in _SPELLED):
            spelled.append((word, phonemes.strip()))
    assert not spelled
    # The check can fail: a decomposed nukta letter is spelled out.
    phonemes = subprocess.run(["espeak-ng", "-v", "as", "-q", "-x", "খা\u09af\u09bc"],
                              capture_output=True, text=True, check=True).stdout
    assert any(marker in phonemes for marker in _SPELLED)
