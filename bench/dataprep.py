#!/usr/bin/env python3
"""Time stages 1-2 (data prep + dump) against ESPnet's way of reading Common Voice, same machine.

The release has Common Voice 7.0 Assamese's split sizes (train 508, dev 116, test 281), built
from the full demo corpus's clips. Compared, in one run:

- ours: `cvasr.dataprep.prepare_data` (decode every clip once, data dirs, report) then
  `cvasr.dump.dump` (decode, down-mix, resample with soxr, FLAC), nj worker processes;
- baseline: ESPnet's egs2/commonvoice recipe, where wav.scp holds `ffmpeg ... |` pipes and the
  dump stage runs each pipe through kaldiio and writes FLAC, in nj worker processes.

Prints a table and writes JSON (default bench/results/dataprep.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
CV7_AS_SIZES = {"train": 508, "dev": 116, "test": 281}


def build_release(demo: Path, out: Path) -> int:
    """A release with CV 7.0 'as' split sizes from the demo corpus's clips; returns clip count."""
    from cvasr.corpora.commonvoice import CV7_HEADER, read_tsv

    if out.exists():
        shutil.rmtree(out)
    (out / "clips").mkdir(parents=True)
    rows = [r for name in ("validated", "other", "invalidated")
            for r in read_tsv(demo / f"{name}.tsv").rows]
    needed = sum(CV7_AS_SIZES.values())
    start = 0
    for split, n in CV7_AS_SIZES.items():
        lines = ["\t".join(CV7_HEADER)]
        for i in range(start, start + n):
            src = rows[i % len(rows)]
            name = f"common_voice_as_bench_{i:05d}.mp3"
            os.link(demo / "clips" / src["path"], out / "clips" / name)
            lines.append("\t".join([src["client_id"] + split, name, src["sentence"], "2", "0",
                                    "", "", "", "as", ""]))
        (out / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        start += n
    shutil.copy(out / "train.tsv", out / "validated.tsv")
    return needed


def run_ours(release: Path, work: Path, nj: int) -> dict[str, float]:
    from cvasr.data.prepare import prepare_data
    from cvasr.data.dump import DumpConfig, dump

    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    prepare_data(release, work / "data", nj=nj, show_progress=False)
    t1 = time.perf_counter()
    dump(work / "data", work / "dump", DumpConfig(nj=nj), show_progress=False)
    t2 = time.perf_counter()
    return {"stage1_s": t1 - t0, "stage2_s": t2 - t1, "total_s": t2 - t0}


def _espnet_dump_chunk(job: tuple[list[tuple[str, str]], str]) -> int:
    """ESPnet's format_wav_scp: read each wav.scp entry (a shell pipe) with kaldiio, write FLAC."""
    import kaldiio

    entries, out_dir = job
    scp = Path(out_dir) / f"chunk_{os.getpid()}_{time.perf_counter_ns()}.scp"
    scp.write_text("".join(f"{utt} {cmd}\n" for utt, cmd in entries), encoding="utf-8")
    n = 0
    for utt, (rate, audio) in kaldiio.load_scp(str(scp)).items():
        sf.write(Path(out_dir) / f"{utt}.flac", audio, rate, format="FLAC", subtype="PCM_16")
        n += 1
    return n


def run_baseline(release: Path, work: Path, nj: int) -> dict[str, float]:
    from cvasr.corpora.commonvoice import read_tsv

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    entries = []
    for split in CV7_AS_SIZES:
        for r in read_tsv(release / f"{split}.tsv").rows:
            clip = release / "clips" / r["path"]
            entries.append((f"{r['client_id']}-{Path(r['path']).stem}",
                            f"ffmpeg -i {clip} -f wav -ar 16000 -ab 16 -ac 1 - 2>/dev/null |"))
    t1 = time.perf_counter()
    chunks = [(entries[i::nj * 4], str(work)) for i in range(nj * 4)]
    with ProcessPoolExecutor(max_workers=nj) as pool:
        written = sum(pool.map(_espnet_dump_chunk, chunks))
    t2 = time.perf_counter()
    assert written == len(entries), (written, len(entries))
    return {"stage1_s": t1 - t0, "stage2_s": t2 - t1, "total_s": t2 - t0}


def espnet2_read_speed(dump_dir: Path, work: Path, repeats: int) -> dict[str, float]:
    """Seconds for espnet2's ESPnetDataset to load every dumped clip: one kaldi ark (the dump)
    vs the same samples as one FLAC file a clip (ESPnet's default dump format)."""
    import kaldiio
    from espnet2.train.dataset import ESPnetDataset

    ark_scp = work / "all_ark.scp"
    ark_scp.write_text("".join((dump_dir / split / "wav.scp").read_text() for split in CV7_AS_SIZES))
    flac_dir = work / "flac"
    flac_dir.mkdir(parents=True, exist_ok=True)
    flac_lines = []
    for utt, (rate, samples) in kaldiio.load_scp(str(ark_scp)).items():
        path = flac_dir / f"{utt}.flac"
        sf.write(path, samples, rate, format="FLAC", subtype="PCM_16")
        flac_lines.append(f"{utt} {path}\n")
    flac_scp = work / "all_flac.scp"
    flac_scp.write_text("".join(flac_lines))
    timings = {}
    for name, scp, kind in (("flac files (sound)", flac_scp, "sound"),
                            ("kaldi ark (kaldi_ark)", ark_scp, "kaldi_ark")):
        best = float("inf")
        for _ in range(repeats):
            dataset = ESPnetDataset([(str(scp), "speech", kind)])
            t0 = time.perf_counter()
            for key in dataset.loader_dict["speech"].keys():
                dataset[key]
            best = min(best, time.perf_counter() - t0)
        timings[name] = best
    return timings


def audio_seconds(release: Path) -> float:
    from cvasr.corpora.commonvoice import read_tsv

    return sum(sf.info(release / "clips" / r["path"]).duration
               for split in CV7_AS_SIZES for r in read_tsv(release / f"{split}.tsv").rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/cvasr-bench-dataprep"))
    parser.add_argument("--nj", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each (best kept)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "dataprep.json")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is needed for the baseline: run make setup")

    from cvasr.corpora.demo import write_demo_corpus

    demo = args.work / "demo_full"
    write_demo_corpus(demo, seed=0, size="full", nj=args.nj, show_progress=False)
    release = args.work / "release_cv7_sizes"
    clips = build_release(demo, release)
    seconds = audio_seconds(release)

    results: dict[str, dict[str, float]] = {}
    for name, fn in (("baseline: ffmpeg pipe per clip (ESPnet)", run_baseline),
                     ("ours: in-process decode + soxr", run_ours)):
        runs = [fn(release, args.work / "out", args.nj) for _ in range(args.repeats)]
        results[name] = min(runs, key=lambda r: r["total_s"])

    run_ours(release, args.work / "out", args.nj)  # leave a dump to read back
    reads = espnet2_read_speed(args.work / "out" / "dump", args.work, args.repeats)

    base = results["baseline: ffmpeg pipe per clip (ESPnet)"]["total_s"]
    print(f"{clips} clips, {seconds / 3600:.2f} h of audio, nj={args.nj}, {os.cpu_count()} cores, "
          f"best of {args.repeats}")
    print(f"| {'method':<40} | {'stage 1 s':>9} | {'stage 2 s':>9} | {'total s':>8} | "
          f"{'audio s/s':>9} | {'speed-up':>8} |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 11}|{'-' * 10}|{'-' * 11}|{'-' * 10}|")
    for name, r in results.items():
        print(f"| {name:<40} | {r['stage1_s']:9.2f} | {r['stage2_s']:9.2f} | {r['total_s']:8.2f} | "
              f"{seconds / r['total_s']:9.0f} | {base / r['total_s']:7.2f}x |")

    print(f"\nespnet2 loading all {clips} dumped clips once (ESPnetDataset, best of {args.repeats}):")
    for name, seconds_taken in reads.items():
        print(f"  {name:<24} {seconds_taken:6.2f} s")

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "dataprep", "clips": clips, "audio_seconds": round(seconds, 1),
        "split_sizes": CV7_AS_SIZES, "nj": args.nj, "cores": os.cpu_count(), "cpu": cpu,
        "python": platform.python_version(), "git_revision": rev, "repeats": args.repeats,
        "results": {k: {m: round(v, 3) for m, v in r.items()} for k, r in results.items()},
        "espnet2_read_seconds": {k: round(v, 3) for k, v in reads.items()},
        "speedup_vs_ffmpeg_pipe": round(base / results["ours: in-process decode + soxr"]["total_s"], 2),
    }, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
