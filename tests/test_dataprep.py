"""Stages 1-2 on generated Common Voice releases with every kind of bad input.

Each test builds a release from real demo clips plus deliberately broken files and rows, runs
the stage, and checks the exact surviving ids and texts and the exact prep report.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cvasr.corpora.commonvoice import CV7_HEADER, read_tsv
from cvasr.data.datadir import speaker_id, utterance_id, validate_data_dir
from cvasr.data.kaldi import read_table
from cvasr.data.prepare import prepare_data
from cvasr.corpora.demo_lexicon import precompose_nukta as canonical
from cvasr.data.dump import DumpConfig, dump
from cvasr.data.report import TooManyDropped

SPK_A, SPK_B, SPK_DEV, SPK_TEST = "a" * 128, "b" * 128, "d" * 128, "e" * 128
HOSTILE = "a b;$(touch pwned)|`x`'.mp3"


def row(client: str, path: str, sentence: str, gender: str = "male") -> list[str]:
    return [client, path, sentence, "2", "0", "twenties", gender, "", "as", ""]


def write_tsv(path: Path, rows: list[list[str]], extra_lines: tuple[str, ...] = ()) -> None:
    lines = ["\t".join(CV7_HEADER), *("\t".join(r) for r in rows), *extra_lines]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def defects_release(tmp_path: Path, small_release: Path) -> Path:
    """A release whose train split has one clip of every kind of bad input."""
    root = tmp_path / "as"
    clips = root / "clips"
    clips.mkdir(parents=True)
    real = sorted((small_release / "clips").iterdir())
    for i, name in enumerate(["good1.mp3", "good2.mp3", "dev1.mp3", "dev2.mp3", "test1.mp3",
                              HOSTILE, "extra.mp3", "punct.mp3"]):
        shutil.copy(real[i], clips / name)
    data = real[9].read_bytes()
    (clips / "truncated.mp3").write_bytes(data[: len(data) // 2])
    (clips / "garbage.mp3").write_bytes(b"ID3 this is not audio" * 40)
    (clips / "empty.mp3").write_bytes(b"")
    stereo = np.stack([np.sin(np.arange(44100 * 2) / 20.0), np.zeros(44100 * 2)], axis=1) * 0.3
    sf.write(clips / "stereo 44k.wav", stereo, 44100)
    sf.write(clips / "short_train.wav", np.full(800, 0.1), 16000)  # 0.05 s
    sf.write(clips / "short_test.wav", np.full(800, 0.1), 16000)

    train = [
        row(SPK_A, "good1.mp3", "“ৰাম কালি বজাৰলৈ গ’ল।”"),
        row(SPK_A, "missing.mp3", "সীতা ভাত খালে।"),
        row(SPK_A, "garbage.mp3", "মা চাহ বনালে।"),
        row(SPK_A, "truncated.mp3", "দেউতা কিতাপ পঢ়িলে।"),
        row(SPK_B, "good2.mp3", ""),
        row(SPK_B, "punct.mp3", "।। — …"),
        row(SPK_A, "good1.mp3", "ৰাম কালি বজাৰলৈ গ'ল।"),
        row(SPK_B, HOSTILE, "তাই গীত গালে।", "female"),
        row(SPK_B, "stereo 44k.wav", "আজি বতৰ বৰ ভাল।", "female"),
        row(SPK_B, "empty.mp3", "সি ঘৰলৈ গ'ল।"),
        row(SPK_B, "short_train.wav", "ককাই আহিল।"),
        row(SPK_B, "../escape.mp3", "বাহিৰলৈ।"),
    ]
    write_tsv(root / "train.tsv", train, extra_lines=(
        "\t".join(row(SPK_A, "x.mp3", "অতিৰিক্ত")) + "\tstray\tfields",))
    write_tsv(root / "dev.tsv", [row(SPK_DEV, "dev1.mp3", "মাধৱে চিঠি লিখিলে।"),
                                 row(SPK_DEV, "dev2.mp3", "ছোৱালীজনী স্কুললৈ গ'ল।")])
    write_tsv(root / "test.tsv", [row(SPK_TEST, "test1.mp3", "বুঢ়ীজনী ঘৰত থাকিল।"),
                                  row(SPK_TEST, "short_test.wav", "হয়।")])
    write_tsv(root / "validated.tsv", [
        row(SPK_A, "good1.mp3", "ৰাম কালি বজাৰলৈ গ'ল।"),
        row(SPK_A, "extra.mp3", "ৰাম ঘৰলৈ ঘূৰি আহিল।"),
        row(SPK_DEV, "dev1.mp3", "মাধৱে চিঠি লিখিলে।"),
        row(SPK_DEV, "extra_dev_speaker.mp3", "মাধৱে গীত গালে।"),
        row(SPK_TEST, "test1.mp3", "বুঢ়ীজনী ঘৰত থাকিল।"),
    ])
    shutil.copy(real[8], clips / "extra_dev_speaker.mp3")
    return root


def reasons(report_path: Path, split: str) -> list[tuple[str, str, int, str]]:
    data = json.loads(report_path.read_text(encoding="utf-8"))
    return [(d["clip"], d["reason"], d["stage"], d["kind"]) for d in data["splits"][split]["dropped"]]


def test_stage1_keeps_the_good_clips_and_reports_every_bad_one(defects_release: Path,
                                                               tmp_path: Path) -> None:
    data = tmp_path / "data"
    with pytest.raises(TooManyDropped) as err:
        prepare_data(defects_release, data, max_drop=0.05, show_progress=False)
    message = str(err.value)
    assert message.startswith("train lost 69.2% of 13 clips to bad input (--max_drop 0.05); "
                              "worst reasons: malformed tsv line (1), empty sentence (1), "
                              "sentence normalises to nothing (1)")
    assert "prep_report.json" in message

    report = json.loads((data / "prep_report.json").read_text(encoding="utf-8"))
    train = report["splits"]["train"]
    assert (train["listed"], train["kept"]) == (13, 4)
    got = reasons(data / "prep_report.json", "train")
    truncated = [g for g in got if g[0] == "truncated.mp3"]
    assert len(truncated) == 1 and truncated[0][1].startswith("truncated audio: decoded ")
    assert [g for g in got if g[0] != "truncated.mp3"] == [
        ("", "malformed tsv line: 12 fields for 10 columns", 1, "bad_input"),
        ("good2.mp3", "empty sentence", 1, "bad_input"),
        ("punct.mp3", "sentence normalises to nothing: '।। — …'", 1, "bad_input"),
        ("good1.mp3", "duplicate row: same clip as train.tsv:2", 1, "bad_input"),
        ("../escape.mp3", "clip path is not a plain file name: '../escape.mp3'", 1, "bad_input"),
        ("missing.mp3", "audio file not found", 1, "bad_input"),
        ("garbage.mp3", "undecodable audio (not a readable mp3/wav/flac file)", 1, "bad_input"),
        ("empty.mp3", "audio file is empty (0 bytes)", 1, "bad_input"),
    ]
    sources = [d["source"] for d in train["dropped"]]
    assert sources[:3] == ["train.tsv:14", "train.tsv:6", "train.tsv:7"]
    assert train["notes"] == [
        {"clip": "stereo 44k.wav", "stage": "1", "source": "train.tsv:10",
         "note": "not 48 kHz mono: 44100 Hz, 2 channel(s); stage 2 converts it"},
        {"clip": "short_train.wav", "stage": "1", "source": "train.tsv:12",
         "note": "not 48 kHz mono: 16000 Hz, 1 channel(s); stage 2 converts it"}]
    assert report["splits"]["dev"] == {"listed": 2, "kept": 2, "dropped": [], "notes": []}
    assert (report["info"]["normalizer"], report["info"]["normalizer_version"]) == ("assamese",
                                                                                "as-1")


def test_stage1_data_dirs_hold_exactly_the_survivors(defects_release: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepare_data(defects_release, data, max_drop=1.0, show_progress=False)
    spk_a, spk_b = speaker_id(SPK_A), speaker_id(SPK_B)
    expected = {
        f"{spk_a}-good1": "ৰাম কালি বজাৰলৈ গ'ল",
        utterance_id(SPK_B, HOSTILE): "তাই গীত গালে",
        f"{spk_b}-short_train": "ককাই আহিল",
        utterance_id(SPK_B, "stereo 44k.wav"): "আজি বতৰ বৰ ভাল",
    }
    assert read_table(data / "train" / "text") == expected
    orig = read_table(data / "train" / "text.orig")
    assert orig[f"{spk_a}-good1"] == "“ৰাম কালি বজাৰলৈ গ’ল।”"
    assert read_table(data / "test" / "text") == {
        f"{speaker_id(SPK_TEST)}-test1": canonical("বুঢ়ীজনী ঘৰত থাকিল"),
        f"{speaker_id(SPK_TEST)}-short_test": canonical("হয়")}
    assert read_table(data / "train" / "utt2gender")[utterance_id(SPK_B, HOSTILE)] == "f"
    for split in ("train", "dev", "test"):
        assert validate_data_dir(data / split) == []
    # The hostile name is only a path: a safe link in wav.scp, nothing executed.
    hostile_wav = read_table(data / "train" / "wav.scp")[utterance_id(SPK_B, HOSTILE)]
    assert Path(hostile_wav).is_symlink() and " " not in hostile_wav and "|" not in hostile_wav
    assert Path(hostile_wav).resolve() == (defects_release / "clips" / HOSTILE).resolve()
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()
    durations = {k: float(v) for k, v in read_table(data / "train" / "utt2dur").items()}
    assert durations[f"{spk_b}-short_train"] == 0.05
    assert durations[utterance_id(SPK_B, "stereo 44k.wav")] == 2.0


def test_stage2_dumps_16k_mono_filters_train_not_test(defects_release: Path, tmp_path: Path) -> None:
    import kaldiio

    data, dumped = tmp_path / "data", tmp_path / "dump"
    prepare_data(defects_release, data, max_drop=1.0, show_progress=False)
    dump(data, dumped, DumpConfig(max_drop=1.0, nj=2), show_progress=False)
    spk_b, spk_test = speaker_id(SPK_B), speaker_id(SPK_TEST)
    train_ids = set(read_table(dumped / "train" / "wav.scp"))
    assert f"{spk_b}-short_train" not in train_ids
    assert len(train_ids) == 3
    assert set(read_table(dumped / "test" / "wav.scp")) == {f"{spk_test}-test1", f"{spk_test}-short_test"}
    stage2 = [r for r in reasons(data / "prep_report.json", "train") if r[2] == 2]
    assert stage2 == [("short_train.wav", "shorter than 0.1 s: 0.05 s", 2, "filtered")]
    for split in ("train", "dev", "test"):
        assert validate_data_dir(dumped / split) == []
        num_samples = read_table(dumped / split / "utt2num_samples")
        for utt, (rate, samples) in kaldiio.load_scp(str(dumped / split / "wav.scp")).items():
            assert rate == 16000 and samples.dtype == np.int16 and samples.ndim == 1
            assert len(samples) == int(num_samples[utt])
            # The same clip decoded straight from the release, converted the same way.
            source = Path(read_table(data / split / "wav.scp")[utt])
            reference = sf.read(source, dtype="float32", always_2d=True)
            assert abs(len(samples) - round(len(reference[0]) * 16000 / reference[1])) <= 1
    stereo = utterance_id(SPK_B, "stereo 44k.wav")
    samples = kaldiio.load_scp(str(dumped / "train" / "wav.scp"))[stereo][1]
    assert len(samples) == 32000
    assert 0.1 < np.abs(samples).max() / 32767 < 0.2  # mean of a 0.3 sine and a silent channel
    assert not list((dumped / "train" / "data").glob("*.partial"))

    # A re-run writes the same bytes and does not count its drops twice.
    ark = (dumped / "train" / "data" / "wav.ark").read_bytes()
    report = dump(data, dumped, DumpConfig(max_drop=1.0, nj=2), show_progress=False)
    assert (dumped / "train" / "data" / "wav.ark").read_bytes() == ark
    assert report.splits["train"].kept == 3
    assert [d.reason for d in report.splits["train"].dropped if d.stage == 2] == \
        ["shorter than 0.1 s: 0.05 s"]


def test_validated_train_set_excludes_dev_and_test(defects_release: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepare_data(defects_release, data, train_set="validated", max_drop=1.0, show_progress=False)
    spk_a, spk_dev = speaker_id(SPK_A), speaker_id(SPK_DEV)
    assert set(read_table(data / "train" / "text")) == {
        f"{spk_a}-good1", f"{spk_a}-extra", f"{spk_dev}-extra_dev_speaker"}
    prepare_data(defects_release, tmp_path / "data2", train_set="validated",
                 exclude_eval_speakers=True, max_drop=1.0, show_progress=False)
    assert set(read_table(tmp_path / "data2" / "train" / "text")) == {
        f"{spk_a}-good1", f"{spk_a}-extra"}


def test_stage1_on_a_clean_release_drops_nothing(small_release: Path, tmp_path: Path) -> None:
    report = prepare_data(small_release, tmp_path / "data", nj=2, show_progress=False)
    assert {n: (s.listed, s.kept) for n, s in report.splits.items()} == \
        {"train": (24, 24), "dev": (6, 6), "test": (6, 6)}
    rows = read_tsv(small_release / "train.tsv").rows
    texts = read_table(tmp_path / "data" / "train" / "text")
    assert len(texts) == 24
    assert all("।" not in t and "\u09bc" not in t for t in texts.values())
    first = rows[0]
    utt = utterance_id(first["client_id"], first["path"])
    assert read_table(tmp_path / "data" / "train" / "text.orig")[utt] == first["sentence"]


def test_ids_are_safe_unique_and_begin_with_the_speaker() -> None:
    assert utterance_id("abc", "common_voice_as_1.mp3") == "abc-common_voice_as_1"
    hostile = utterance_id("x y", "a b|c.mp3")
    assert hostile.startswith(speaker_id("x y") + "-")
    assert all(ch.isalnum() or ch in "_.-" for ch in hostile)
    assert utterance_id("s", "a b.mp3") != utterance_id("s", "a_b.mp3")
    assert hostile.count("-") == 1
