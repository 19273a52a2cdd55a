"""Kaldi-style data directories: safe ids, writing, reading and validation.

A data dir is a set of sorted two-column text files keyed by utterance id (`wav.scp`, `text`,
`utt2spk`, ...) plus `spk2utt` keyed by speaker. espnet2 and Kaldi tools rely on the ids being
free of whitespace, on every file being sorted the same way, and on `wav.scp` naming files (a
line ending in `|` would be run as a shell command by Kaldi readers): the validator checks all
of that, with the file and line of each problem.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cvasr.data.kaldi import iter_table, read_table, write_table

_UNSAFE = re.compile(r"[^A-Za-z0-9_.]+")


def safe_id(raw: str) -> str:
    """`raw` reduced to [A-Za-z0-9_.]; if anything had to change, a hash of `raw` keeps it unique.

    Dashes are excluded so that the one dash in an utterance id is the speaker separator.
    """
    cleaned = _UNSAFE.sub("_", raw).strip("_.") or "x"
    if cleaned == raw:
        return raw
    return f"{cleaned}_{hashlib.sha1(raw.encode('utf-8')).hexdigest()[:8]}"


def speaker_id(client_id: str) -> str:
    return safe_id(client_id)


def utterance_id(client_id: str, clip_path: str) -> str:
    """`<speaker>-<clip stem>`, as ESPnet's Common Voice recipe names utterances, made safe."""
    stem = Path(clip_path).name
    for suffix in (".mp3", ".wav", ".flac", ".ogg"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return f"{speaker_id(client_id)}-{safe_id(stem)}"


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    spk_id: str
    wav: str  # a file path, never a command
    text: str  # normalised
    text_orig: str  # as written in the release
    gender: str  # m, f or u
    duration: float


def write_data_dir(directory: Path, utterances: list[Utterance]) -> None:
    """Write the Kaldi files of one split, sorted; `text.orig` keeps the raw sentences."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    by_id = {u.utt_id: u for u in utterances}
    if len(by_id) != len(utterances):
        raise ValueError(f"{directory}: duplicate utterance ids")
    write_table(directory / "wav.scp", {k: u.wav for k, u in by_id.items()})
    write_table(directory / "text", {k: u.text for k, u in by_id.items()})
    write_table(directory / "text.orig", {k: " ".join(u.text_orig.split()) for k, u in by_id.items()})
    write_table(directory / "utt2spk", {k: u.spk_id for k, u in by_id.items()})
    write_table(directory / "utt2gender", {k: u.gender for k, u in by_id.items()})
    write_table(directory / "utt2dur", {k: f"{u.duration:.3f}" for k, u in by_id.items()})
    write_spk2utt(directory)


def write_spk2utt(directory: Path) -> None:
    utt2spk = read_table(Path(directory) / "utt2spk")
    spk2utt: dict[str, list[str]] = {}
    for utt, spk in sorted(utt2spk.items()):
        spk2utt.setdefault(spk, []).append(utt)
    write_table(Path(directory) / "spk2utt", {s: " ".join(u) for s, u in spk2utt.items()})


def _file_part(wav: str) -> str:
    """The file of a wav.scp entry: the path itself, or the ark of an `ark:offset` entry."""
    head, sep, offset = wav.rpartition(":")
    return head if sep and offset.isdigit() and head.endswith(".ark") else wav


REQUIRED_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")
OPTIONAL_FILES = ("text.orig", "utt2gender", "utt2dur", "utt2num_samples")


def validate_data_dir(directory: Path, check_files: bool = True) -> list[str]:
    """Problems found in a data dir as "file:line: what" strings; an empty list means valid."""
    directory = Path(directory)
    problems: list[str] = []
    if not directory.is_dir():
        return [f"{directory}: not a directory"]
    for name in REQUIRED_FILES:
        if not (directory / name).is_file():
            problems.append(f"{directory / name}: missing")
    if problems:
        return problems

    tables: dict[str, dict[str, str]] = {}
    for name in (*REQUIRED_FILES, *OPTIONAL_FILES):
        path = directory / name
        if not path.is_file():
            continue
        table: dict[str, str] = {}
        previous = None
        for entry in iter_table(path, keep_blank=True):
            key, value, where = entry.key, entry.value, f"{path}:{entry.line_no}"
            if not key or entry.raw[:1].isspace():
                problems.append(f"{where}: malformed line {entry.raw!r}")
                continue
            if not value.strip():
                problems.append(f"{where}: {key} has no value")
            if key in table:
                problems.append(f"{where}: duplicate key {key}")
            if previous is not None and key < previous:
                problems.append(f"{where}: not sorted ({key} after {previous})")
            previous = key
            table[key] = value
        tables[name] = table

    utts = set(tables["utt2spk"])
    for name, table in tables.items():
        if name == "spk2utt":
            continue
        if set(table) != utts:
            extra, missing = sorted(set(table) - utts), sorted(utts - set(table))
            detail = "; ".join(filter(None, [
                f"{len(extra)} ids not in utt2spk (first {extra[0]})" if extra else "",
                f"{len(missing)} utt2spk ids missing (first {missing[0]})" if missing else ""]))
            problems.append(f"{directory / name}: ids differ from utt2spk: {detail}")

    expected_spk2utt: dict[str, list[str]] = {}
    for utt, spk in sorted(tables["utt2spk"].items()):
        expected_spk2utt.setdefault(spk, []).append(utt)
        if not utt.startswith(spk):
            problems.append(f"{directory / 'utt2spk'}: utterance {utt} does not begin with its "
                            f"speaker id {spk}")
    actual = {spk: value.split() for spk, value in tables["spk2utt"].items()}
    if actual != expected_spk2utt:
        problems.append(f"{directory / 'spk2utt'}: does not match utt2spk (regenerate it from utt2spk)")
    by_speaker = [spk for _, spk in sorted(tables["utt2spk"].items())]
    if by_speaker != sorted(by_speaker):
        problems.append(f"{directory / 'utt2spk'}: sorted by utterance but not by speaker; "
                        "utterance ids must begin with the speaker id")

    for line_no, (utt, wav) in enumerate(sorted(tables["wav.scp"].items()), start=1):
        where = f"{directory / 'wav.scp'}:{line_no}"
        if wav.rstrip().endswith("|") or wav.lstrip().startswith("-"):
            problems.append(f"{where}: {utt} maps to a command, not a file: {wav!r}")
        elif check_files and not Path(_file_part(wav)).is_file():
            problems.append(f"{where}: {utt}: audio file {_file_part(wav)} does not exist")
    for name, kind in (("utt2dur", float), ("utt2num_samples", int)):
        for utt, value in tables.get(name, {}).items():
            try:
                ok = kind(value) > 0
            except ValueError:
                ok = False
            if not ok:
                problems.append(f"{directory / name}: {utt} has invalid value {value!r}")
    return problems
