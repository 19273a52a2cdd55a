"""Stage 2: data dirs to dumped 16 kHz mono 16-bit FLAC that espnet2 trains and decodes from.

Decoding, down-mixing and resampling happen in `nj` worker processes. Each FLAC is written
under a temporary name and renamed, so a killed run leaves no half file, and a re-run reuses
the files that are newer than their source. Train and dev are filtered by duration and empty
text (as ESPnet's asr.sh does); test is never filtered by length, so scores cover every clip.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from cvasr.audio import TARGET_RATE, AudioError, dump_clip
from cvasr.datadir import read_table, validate_data_dir, write_spk2utt
from cvasr.prep_report import FILTERED, Drop, PrepReport, check_max_drop, print_summary
from cvasr.progress import progress

LENGTH_FILTERED_SPLITS = ("train", "dev")


@dataclass(frozen=True)
class DumpConfig:
    min_duration: float = 0.1
    max_duration: float = 20.0
    max_drop: float = 0.05
    nj: int = 2


def _dump_one(job: tuple[str, str]) -> int | str:
    """Worker: samples written for (source, target), or the reason the clip is unusable."""
    src, dst = Path(job[0]), Path(job[1])
    try:
        if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
            return sf.info(dst).frames  # done by an earlier (perhaps interrupted) run
        return dump_clip(src, dst)
    except AudioError as err:
        return str(err)
    except OSError as err:
        return f"audio file unreadable: {err.strerror or err}"


def _write(path: Path, rows: dict[str, str]) -> None:
    path.write_text("".join(f"{k} {v}\n" for k, v in sorted(rows.items())), encoding="utf-8")


def dump_split(name: str, data_dir: Path, dump_dir: Path, report: PrepReport, config: DumpConfig,
               show_progress: bool = True) -> None:
    """Dump one split into dump_dir/<name> and record every drop in `report`."""
    src_dir, out_dir = Path(data_dir) / name, Path(dump_dir) / name
    wavs = read_table(src_dir / "wav.scp")
    texts = read_table(src_dir / "text")
    utt2spk = read_table(src_dir / "utt2spk")
    audio_dir = out_dir / "data"
    audio_dir.mkdir(parents=True, exist_ok=True)
    utts = sorted(wavs)
    jobs = [(wavs[u], str(audio_dir / f"{u}.flac")) for u in utts]
    with ProcessPoolExecutor(max_workers=max(1, config.nj)) as pool:
        results = list(progress(pool.map(_dump_one, jobs, chunksize=4), total=len(jobs),
                                desc=f"dumping {name}", unit="clip", disable=not show_progress))
    split = report.splits[name]
    kept: dict[str, int] = {}
    for utt, result in zip(utts, results):
        clip = os.path.basename(os.path.realpath(wavs[utt]))
        if isinstance(result, str):
            split.dropped.append(Drop(clip=clip, reason=result, stage=2))
            continue
        seconds = result / TARGET_RATE
        if name in LENGTH_FILTERED_SPLITS:
            if seconds < config.min_duration:
                split.dropped.append(Drop(clip=clip, stage=2, kind=FILTERED, reason=(
                    f"shorter than {config.min_duration:g} s: {seconds:.2f} s")))
                continue
            if seconds > config.max_duration:
                split.dropped.append(Drop(clip=clip, stage=2, kind=FILTERED, reason=(
                    f"longer than {config.max_duration:g} s: {seconds:.2f} s")))
                continue
            if not texts.get(utt, "").strip():
                split.dropped.append(Drop(clip=clip, stage=2, kind=FILTERED, reason="empty text"))
                continue
        kept[utt] = result
    _write(out_dir / "wav.scp", {u: str((audio_dir / f"{u}.flac").resolve()) for u in kept})
    _write(out_dir / "text", {u: texts[u] for u in kept})
    _write(out_dir / "utt2spk", {u: utt2spk[u] for u in kept})
    _write(out_dir / "utt2num_samples", {u: str(n) for u, n in kept.items()})
    write_spk2utt(out_dir)
    for stale in audio_dir.glob("*.flac"):  # clips dropped now but dumped by an earlier run
        if stale.stem not in kept:
            stale.unlink()
    problems = validate_data_dir(out_dir)
    if problems:
        raise ValueError(f"{out_dir} failed validation: " + "; ".join(problems[:5]))


def dump(data_dir: Path, dump_dir: Path, config: DumpConfig = DumpConfig(),
         show_progress: bool = True) -> PrepReport:
    """Stage 2 over train, dev and test; updates data/prep_report.json."""
    data_dir, dump_dir = Path(data_dir), Path(dump_dir)
    report_path = data_dir / "prep_report.json"
    if not report_path.is_file():
        raise FileNotFoundError(f"{report_path} not found: run stage 1 first")
    report = PrepReport.load(report_path)
    report.forget_stage(2)
    for name in ("train", "dev", "test"):
        dump_split(name, data_dir, dump_dir, report, config, show_progress)
    report.info["dump"] = (f"16 kHz mono 16-bit FLAC; train/dev kept if {config.min_duration:g}-"
                           f"{config.max_duration:g} s with text; test unfiltered")
    report.save(report_path)
    print_summary(report, stage=2)
    check_max_drop(report, config.max_drop, report_path)
    return report
