"""Reading and checking a Common Voice release: headers, odd files, tarballs."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from cvasr.corpora.commonvoice import (ReleaseError, check_release, download_hint, extract_release,
                                       find_release_root, read_tsv, release_version)

HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent\tlocale\tsegment"


def test_check_release_counts(small_release: Path) -> None:
    report = check_release(small_release)
    counts = {s.name: (s.rows, s.speakers, len(s.missing_clips)) for s in report.splits}
    assert counts == {"train": (24, 2, 0), "dev": (6, 1, 0), "test": (6, 1, 0),
                      "validated": (40, 4, 0), "invalidated": (3, 3, 0), "other": (3, 2, 0)}
    text = report.format(lang="as", version="7.0")
    assert "train.tsv" in text and "published CV 7.0 'as' sizes: train 508, dev 116, test 281" in text


def test_missing_files_are_named_with_the_download_hint(tmp_path: Path, small_release: Path) -> None:
    release = tmp_path / "as"
    shutil.copytree(small_release, release)
    (release / "dev.tsv").unlink()
    shutil.rmtree(release / "clips")
    with pytest.raises(ReleaseError) as err:
        check_release(release, lang="as")
    assert "missing clips/, dev.tsv" in str(err.value)
    assert download_hint("as") in str(err.value)
    assert "cv-corpus-7.0-2021-07-21-as.tar.gz" in str(err.value)
    with pytest.raises(ReleaseError, match="does not exist"):
        check_release(tmp_path / "nowhere")


def test_missing_audio_is_counted_not_fatal(tmp_path: Path, small_release: Path) -> None:
    release = tmp_path / "as"
    shutil.copytree(small_release, release)
    first_test_clip = read_tsv(release / "test.tsv").rows[0]["path"]
    (release / "clips" / first_test_clip).unlink()
    report = check_release(release)
    missing = {s.name: s.missing_clips for s in report.splits}
    assert missing["test"] == [first_test_clip]
    assert missing["train"] == []
    assert f"test.tsv lists {first_test_clip}, not found in clips/" in report.format()


def test_header_without_required_column_names_file_and_line(tmp_path: Path) -> None:
    tsv = tmp_path / "train.tsv"
    tsv.write_text("client_id\tfile\tsentence\nabc\tx.mp3\tঘৰ\n", encoding="utf-8")
    with pytest.raises(ReleaseError, match=r"train.tsv:1: header lacks column\(s\) path"):
        read_tsv(tsv)


def test_read_tsv_bom_crlf_quotes_and_extra_columns(tmp_path: Path) -> None:
    tsv = tmp_path / "validated.tsv"
    body = (f"\ufeff{HEADER}\tvariant\r\n"
            'aa\ta.mp3\t"মই কালি গ\'লোঁ\tx\t0\t\t\t\tas\t\t\r\n'
            "bb\tb.mp3\tঘৰ\r\n"
            "cc\tc.mp3\tএটা\t2\t0\t\t\t\tas\t\tv\textra\r\n")
    tsv.write_bytes(body.encode("utf-8"))
    table = read_tsv(tsv)
    assert table.header[0] == "client_id" and table.header[-1] == "variant"
    assert [r["sentence"] for r in table.rows] == ['"মই কালি গ\'লোঁ', "ঘৰ"]
    assert table.rows[0]["segment"] == "" and table.rows[1]["locale"] == ""
    assert table.problems == [(4, "12 fields for 11 columns")]


def _tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_extract_release_finds_the_language_folder(tmp_path: Path, small_release: Path) -> None:
    members = {f"cv-corpus-7.0-2021-07-21/as/{p.relative_to(small_release)}": p.read_bytes()
               for p in small_release.rglob("*") if p.is_file()}
    tarball = _tarball(tmp_path / "cv-as.tar.gz", members)
    root = extract_release(tarball, tmp_path / "downloads", "as")
    assert root == tmp_path / "downloads" / "cv-corpus-7.0-2021-07-21" / "as"
    assert check_release(root).splits[0].rows == 24
    # A second call finds the marker and does not unpack again.
    (root / "train.tsv").write_text("edited")
    assert extract_release(tarball, tmp_path / "downloads", "as") == root
    assert (root / "train.tsv").read_text() == "edited"
    assert find_release_root(tmp_path / "downloads" / "cv-corpus-7.0-2021-07-21", "as") == root


def test_hostile_or_broken_tarballs_are_refused(tmp_path: Path) -> None:
    evil = _tarball(tmp_path / "evil.tar.gz", {"../escaped.txt": b"x", "as/train.tsv": b"y"})
    with pytest.raises(ReleaseError, match="refusing to extract .*evil.tar.gz: unsafe archive") as err:
        extract_release(evil, tmp_path / "out", "as")
    assert "download complete" not in str(err.value)
    assert not (tmp_path / "escaped.txt").exists()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(_tarball(tmp_path / "ok.tar.gz", {"as/x": b"z" * 5000}).read_bytes()[:60])
    with pytest.raises(ReleaseError, match="truncated.tar.gz"):
        extract_release(truncated, tmp_path / "out2", "as")
    with pytest.raises(ReleaseError, match="does not exist"):
        extract_release(tmp_path / "none.tar.gz", tmp_path / "out3", "as")


@pytest.mark.parametrize("path, version", [
    ("cv-corpus-7.0-2021-07-21/as", "7.0"),
    ("/data/cv-corpus-5.1-2020-06-22/cy", "5.1"),
    ("/data/cv-corpus-17.0-2024-03-15/bn", "17.0"),
    ("/data/cv-corpus-19.0-delta-2024-09-13/pt-BR", "19.0-delta"),
    ("/downloads/cv-corpus-8.0-2022-01-19-as", "8.0"),
    ("/data/my_release/as", None),
    ("/data/cv-corpus-latest/as", None),
])
def test_release_version_from_the_folder_names(path: str, version: str | None) -> None:
    assert release_version(Path(path)) == version


def test_version_picks_the_published_sizes_to_compare(tmp_path: Path, small_release: Path) -> None:
    for name, known in (("cv-corpus-7.0-2021-07-21", True), ("cv-corpus-17.0-2024-03-15", False)):
        root = tmp_path / name / "as"
        shutil.copytree(small_release, root)
        check = check_release(root, lang="as")
        text = check.format(lang="as")
        assert text.splitlines()[0].endswith(f"(Common Voice {name.split('-')[2]}, 'as')")
        assert ("published CV 7.0 'as' sizes" in text) is known
        assert ("note: this release differs from the published sizes: train 24 (published 508)"
                in text) is known


def test_download_hint_names_the_users_language(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError) as err:
        check_release(tmp_path / "cv-corpus-17.0-2024-03-15" / "cy", lang="cy")
    message = str(err.value)
    assert "'Common Voice Corpus 17.0', language 'cy'" in message
    assert "-as.tar.gz" not in message and "Assamese" not in message
    assert "language 'bn'" in download_hint("bn")


def test_a_different_tarball_of_the_same_name_is_extracted_again(tmp_path: Path) -> None:
    first = _tarball(tmp_path / "cv.tar.gz", {"as/train.tsv": b"one", "as/clips/a.mp3": b"a"})
    root = extract_release(first, tmp_path / "out", "as")
    assert (root / "train.tsv").read_bytes() == b"one"
    again = _tarball(tmp_path / "cv.tar.gz", {"as/train.tsv": b"second", "as/clips/a.mp3": b"a"})
    assert again == first
    assert extract_release(again, tmp_path / "out", "as") == root
    assert (root / "train.tsv").read_bytes() == b"second"
