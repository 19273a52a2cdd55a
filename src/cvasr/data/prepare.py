"""Stage 1: a Common Voice release to Kaldi data dirs `data/{train,dev,test}`.

Every clip a split lists ends up either in the data dir or in `data/prep_report.json` with the
reason it was dropped: duplicate row, missing or broken audio, a sentence that is empty or
normalises to nothing. Audio is decoded once here (in `nj` processes) so that `utt2dur` is the
real length and broken files are caught before anything is trained on them.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cvasr import defaults
from cvasr.console import say
from cvasr.data.audio import AudioError, AudioInfo, probe_audio
from cvasr.corpora.commonvoice import ClipRow, check_release, load_splits
from cvasr.data.datadir import Utterance, speaker_id, utterance_id, validate_data_dir, write_data_dir
from cvasr.text.normalize import get_normalizer
from cvasr.data.report import (Drop, PrepReport, SplitReport, check_max_drop, print_summary)
from cvasr.progress import progress

EXPECTED_RATE = 48_000
#: Characters a wav.scp path may hold as is; any other (spaces, `|`, `;`, quotes...) gets a link.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")


def _gender_code(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("female"):
        return "f"
    if value.startswith("male"):
        return "m"
    return "u"


def _probe(path: str) -> AudioInfo | str:
    """Worker: the clip's audio facts, or the reason it is unusable."""
    try:
        return probe_audio(Path(path))
    except AudioError as err:
        return str(err)


@dataclass
class _Candidate:
    row: ClipRow
    utt_id: str
    text: str
    audio_path: Path
    fact: AudioInfo | str | None = None  # the audio check's result, or why the clip is unusable


def _safe_wav_path(audio: Path, utt_id: str, link_dir: Path) -> str:
    """The path for wav.scp: the clip itself, or a link with a safe name if its path is odd."""
    resolved = str(audio.resolve())
    if _SAFE_PATH.match(resolved):
        return resolved
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / f"{utt_id}{audio.suffix.lower() if _SAFE_PATH.match(audio.suffix) else ''}"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(resolved, link)
    return str(link)


def prepare_data(release: Path, data_dir: Path, lang: str = "as", train_set: str = "train",
                 exclude_eval_speakers: bool = False, max_drop: float = defaults.MAX_DROP, nj: int = defaults.NJ,
                 show_progress: bool = True) -> PrepReport:
    """Write data/{train,dev,test} and data/prep_report.json; raise TooManyDropped past max_drop."""
    release, data_dir = Path(release), Path(data_dir)
    check_release(release, lang)  # unusable release: clear error before any work
    normalize = get_normalizer(lang)
    splits, malformed = load_splits(release, train_set, exclude_eval_speakers)
    say(normalize.describe())
    report = PrepReport(info={"release": str(release.resolve()), "lang": lang,
                              "normalizer": normalize.name,
                              "normalizer_version": normalize.version, "train_set": train_set,
                              "exclude_eval_speakers": str(exclude_eval_speakers).lower()})
    candidates: dict[str, list[_Candidate]] = {}
    for name, rows in splits.items():
        split = report.splits[name] = SplitReport(listed=len(rows) + len(malformed[name]))
        split.dropped += [Drop(clip="", reason=f"malformed tsv line: {what}", stage=1, source=src)
                          for src, what in malformed[name]]
        seen: dict[str, str] = {}
        candidates[name] = []
        for row in rows:
            def drop(reason: str) -> None:
                split.dropped.append(Drop(clip=row.path, reason=reason, stage=1, source=row.source))

            if row.path in seen:
                drop(f"duplicate row: same clip as {seen[row.path]}")
                continue
            seen[row.path] = row.source
            if not row.sentence.strip():
                drop("empty sentence")
                continue
            text = normalize(row.sentence)
            if not text:
                drop(f"sentence normalises to nothing: {row.sentence!r}")
                continue
            audio = release / "clips" / row.path
            if Path(row.path).name != row.path or row.path in ("", ".", ".."):
                drop(f"clip path is not a plain file name: {row.path!r}")
                continue
            candidates[name].append(_Candidate(row, utterance_id(row.client_id, row.path), text,
                                               audio))
    all_candidates = [c for cs in candidates.values() for c in cs]
    with ProcessPoolExecutor(max_workers=max(1, nj)) as pool:
        probes = list(progress(
            pool.map(_probe, [str(c.audio_path) for c in all_candidates], chunksize=8),
            total=len(all_candidates), desc="checking audio", unit="clip",
            disable=not show_progress))
    for candidate, fact in zip(all_candidates, probes):
        candidate.fact = fact

    link_dir = data_dir / "local" / "clip_links"
    for name, cands in candidates.items():
        split = report.splits[name]
        utterances = []
        for c in cands:
            fact = c.fact
            assert fact is not None
            if isinstance(fact, str):
                split.dropped.append(Drop(clip=c.row.path, reason=fact, stage=1, source=c.row.source))
                continue
            if fact.rate != EXPECTED_RATE or fact.channels != 1:
                split.notes.append({"clip": c.row.path, "stage": "1", "source": c.row.source,
                                    "note": f"not 48 kHz mono: {fact.rate} Hz, {fact.channels} "
                                            "channel(s); stage 2 converts it"})
            utterances.append(Utterance(
                utt_id=c.utt_id, spk_id=speaker_id(c.row.client_id),
                wav=_safe_wav_path(c.audio_path, c.utt_id, link_dir), text=c.text,
                text_orig=c.row.sentence, gender=_gender_code(c.row.gender),
                duration=fact.duration))
        ids = [u.utt_id for u in utterances]
        if len(set(ids)) != len(ids):  # two clip names that differ only in unsafe characters
            raise ValueError(f"{name}: clip names map to the same utterance id; report this")
        write_data_dir(data_dir / name, utterances)
        problems = validate_data_dir(data_dir / name)
        if problems:
            raise ValueError(f"{data_dir / name} failed validation: " + "; ".join(problems[:5]))
    report_path = data_dir / "prep_report.json"
    report.save(report_path)
    print_summary(report, stage=1)
    check_max_drop(report, max_drop, report_path)
    return report
