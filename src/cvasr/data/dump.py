"""Stage 2: data dirs to dumped 16 kHz mono 16-bit audio that espnet2 trains and decodes from.

Clips are decoded, down-mixed and resampled in `nj` worker processes and written into one
Kaldi ark per split (`dump/<split>/data/wav.ark`, each clip a 16-bit WAV record; `wav.scp` maps
ids to `ark:offset`). bench/dataprep.py measured espnet2 loading the 905 clips of CV 7.0's split
sizes 12x faster from an ark (`kaldi_ark` type) than from one FLAC file a clip (`sound`), so the
ark is the dump format. The ark is written under a temporary name and renamed when complete.

espnet2's `kaldi_ark` loader hands int16 samples over as floats in the int16 range (its `sound`
loader scales to [-1, 1]); the frontends we use are invariant to that scale (wav2vec 2.0 layer-
normalises the waveform, fbank features are mean/variance normalised), and decoding reads audio
the same way as training.

Train and dev are filtered by duration and empty text (as ESPnet's asr.sh does); test is never
filtered by length, so scores cover every clip.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import numpy as np

from cvasr import defaults
from cvasr.data.audio import TARGET_RATE, AudioError, load_16k
from cvasr.data.datadir import validate_data_dir, write_spk2utt
from cvasr.data.kaldi import read_table, write_table
from cvasr.data.report import FILTERED, Drop, PrepReport, check_max_drop, print_summary
from cvasr.progress import progress

LENGTH_FILTERED_SPLITS = ("train", "dev")


@dataclass(frozen=True)
class DumpConfig:
    min_duration: float = defaults.MIN_DURATION
    max_duration: float = defaults.MAX_DURATION
    max_drop: float = defaults.MAX_DROP
    nj: int = defaults.NJ


def _load(path: str) -> np.ndarray | str:
    """Worker: the clip's 16 kHz int16 samples, or the reason the clip is unusable."""
    try:
        return load_16k(Path(path))
    except AudioError as err:
        return str(err)
    except OSError as err:
        return f"audio file unreadable: {err.strerror or err}"


def _drop_reason(name: str, seconds: float, text: str, config: DumpConfig) -> str | None:
    if name not in LENGTH_FILTERED_SPLITS:
        return None
    if seconds < config.min_duration:
        return f"shorter than {config.min_duration:g} s: {seconds:.2f} s"
    if seconds > config.max_duration:
        return f"longer than {config.max_duration:g} s: {seconds:.2f} s"
    if not text.strip():
        return "empty text"
    return None


def dump_split(name: str, data_dir: Path, dump_dir: Path, report: PrepReport, config: DumpConfig,
               show_progress: bool = True) -> None:
    """Dump one split into dump_dir/<name> and record every drop in `report`."""
    src_dir, out_dir = Path(data_dir) / name, Path(dump_dir) / name
    wavs = read_table(src_dir / "wav.scp")
    texts = read_table(src_dir / "text")
    utt2spk = read_table(src_dir / "utt2spk")
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    ark = (out_dir / "data" / "wav.ark").resolve()
    partial = ark.with_name("wav.ark.partial")
    utts = sorted(wavs)
    split = report.splits[name]
    scp: dict[str, str] = {}
    num_samples: dict[str, int] = {}
    with ProcessPoolExecutor(max_workers=max(1, config.nj)) as pool, open(partial, "wb") as out:
        loaded = pool.map(_load, [wavs[u] for u in utts], chunksize=4)
        for utt, result in zip(utts, progress(loaded, total=len(utts), desc=f"dumping {name}",
                                              unit="clip", disable=not show_progress)):
            clip = os.path.basename(os.path.realpath(wavs[utt]))
            if isinstance(result, str):
                split.dropped.append(Drop(clip=clip, reason=result, stage=2))
                continue
            reason = _drop_reason(name, len(result) / TARGET_RATE, texts.get(utt, ""), config)
            if reason:
                split.dropped.append(Drop(clip=clip, reason=reason, stage=2, kind=FILTERED))
                continue
            offset = out.tell() + len(utt.encode("utf-8")) + 1  # past "<utt> "
            kaldiio.save_ark(out, {utt: (TARGET_RATE, result)})
            scp[utt] = f"{ark}:{offset}"
            num_samples[utt] = len(result)
    os.replace(partial, ark)
    write_table(out_dir / "wav.scp", scp)
    write_table(out_dir / "text", {u: texts[u] for u in scp})
    write_table(out_dir / "utt2spk", {u: utt2spk[u] for u in scp})
    write_table(out_dir / "utt2num_samples", {u: str(n) for u, n in num_samples.items()})
    write_spk2utt(out_dir)
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
    report.info["dump"] = (f"16 kHz mono 16-bit WAV records in a Kaldi ark; train/dev kept if "
                           f"{config.min_duration:g}-{config.max_duration:g} s with text; "
                           "test unfiltered")
    report.save(report_path)
    print_summary(report, stage=2)
    check_max_drop(report, config.max_drop, report_path)
    return report
