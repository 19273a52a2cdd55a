#!/usr/bin/env python3
"""`cvasr transcribe` for people: start-up against importing torch, and long files.

All in one run, each a fresh process as a user starts it, wall time best of `--repeats`:

- `python -c "import torch, torchaudio"`: the floor any PyTorch tool pays; the goal is one
  clip's `cvasr transcribe` within 3x of it;
- `python -c "import espnet2.tasks.asr"`: what building the model through espnet2's ASR task
  imported before (the SSL task, g2p_en, transformers' BART, ...), for reference;
- `cvasr transcribe` of one demo clip, decoded as stage 5 recorded (beam, word LM);
- `cvasr transcribe` of 1-, 2-, 5-, 10- and 30-minute files made of the demo's test clips
  end to end (16 kHz wav): wall time and the process's peak resident memory (its own
  rusage), and the text's CER against the clips' references next to the CER of the same
  clips transcribed each on its own (what windows and segments cost in accuracy), and of
  the same windows' log-posteriors searched at once instead of in segments (in this
  process: the choice decoding/chunks.py explains).

Needs a finished `make demo` work dir (the experiment, data/lm, dump/test, the clips). Prints a
table and writes JSON (default bench/results/transcribe.json).

    .venv/bin/python bench/transcribe.py --work-dir egs/as_cv7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}
RATE = 16_000


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak resident MB of the process (its own rusage) and its stdout."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
        out.seek(0)
        return seconds, usage.ru_maxrss / 1024, out.read().decode("utf-8")


def best_of(cmd: list[str], repeats: int) -> dict:
    runs = [run_measured(cmd) for _ in range(repeats)]
    seconds = [r[0] for r in runs]
    return {"seconds": round(min(seconds), 2), "all_seconds": [round(s, 2) for s in seconds],
            "peak_rss_mb": round(max(r[1] for r in runs)), "stdout": runs[0][2]}


def cer(hyp: str, ref: str) -> float:
    from cvasr.scoring.sclite import count_errors

    return round(count_errors([(ref.split(), hyp.split())], "char").pct("err"), 2)


def one_search_cer(exp: Path, wav: Path, ref: str) -> float:
    """CER of the long file's log-posteriors (the same windows) searched in one piece, with
    the recorded decoding, rather than in segments cut at pauses."""
    from cvasr import Transcriber
    from cvasr.data.audio import load_16k
    from cvasr.decoding.decoder import Search

    asr = Transcriber(exp)
    [logp] = asr.decoder.all_log_probs([load_16k(wav)], asr.options.batch_size, asr.options)
    return cer(Search(asr.decoder.tokens, asr.options)(logp).text, ref)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=REPO / "egs" / "as_cv7",
                        help="a finished `make demo` work dir")
    parser.add_argument("--exp", default="asr_train_demo_ctc_char", help="model under exp/")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 5, 10, 30])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each start-up row")
    parser.add_argument("--long-repeats", type=int, default=2, help="runs of each long file")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" /
                        "transcribe.json")
    args = parser.parse_args()

    import kaldiio
    import numpy as np
    import soundfile as sf

    work = args.work_dir.resolve()
    exp = work / "exp" / args.exp
    clips = sorted((work / "downloads").glob("demo_cv7_as_*/clips/*.mp3"))
    if not (exp / "config.yaml").is_file() or not clips:
        raise SystemExit(f"no finished demo in {work}: run `make demo` first")
    clip = next((c for c in clips if c.name == "common_voice_as_20436707.mp3"), clips[0])
    transcribe = [sys.executable, "-m", "cvasr.cli", "transcribe", "--model", str(exp)]

    rows = []

    def show(row: dict) -> None:
        rows.append(row)
        print(f"{row['what']:<58} {row['seconds']:>7.2f} s  {row['peak_rss_mb']:>6} MB", flush=True)

    base = best_of([sys.executable, "-c", "import torch, torchaudio"], args.repeats)
    show({"what": "python -c 'import torch, torchaudio'", **base})
    show({"what": "python -c 'import espnet2.tasks.asr'",
          **best_of([sys.executable, "-c", "import espnet2.tasks.asr"], args.repeats)})
    one = best_of([*transcribe, str(clip)], args.repeats)
    show({"what": f"cvasr transcribe, one clip ({clip.name})", **one})
    ratio = round(one["seconds"] / base["seconds"], 2)
    print(f"one clip / import torch, torchaudio: {ratio}x (goal: within 3x)")

    test = work / "dump" / "test"
    refs = dict(line.split(" ", 1) for line in
                (test / "text").read_text(encoding="utf-8").splitlines())
    utts = list(kaldiio.load_scp(str(test / "wav.scp")).items())
    with tempfile.TemporaryDirectory() as tmp:
        # every test clip once, one by one: the per-clip texts the long files are held against
        paths = []
        for utt, (rate, samples) in utts:
            paths.append(Path(tmp) / f"{utt}.wav")
            sf.write(paths[-1], samples, rate, subtype="PCM_16")
        per_clip = run_measured([*transcribe, *map(str, paths)])[2].splitlines()
        clip_text = {Path(line.split("\t")[0]).stem: line.split("\t")[1] for line in per_clip}
        for minutes in args.minutes:
            parts, ids, n = [], [], 0
            while n < minutes * 60 * RATE:
                utt, (_, samples) = utts[len(ids) % len(utts)]
                parts.append(samples)
                ids.append(utt)
                n += len(samples)
            wav = Path(tmp) / f"long_{minutes:g}min.wav"
            sf.write(wav, np.concatenate(parts), RATE, subtype="PCM_16")
            row = best_of([*transcribe, str(wav)], args.long_repeats)
            text = row["stdout"].split("\t", 1)[1].strip()
            ref = " ".join(refs[u] for u in ids)
            show({"what": f"cvasr transcribe, {minutes:g} min ({len(ids)} test clips end to end)",
                  **row, "audio_seconds": round(n / RATE, 1), "clips": len(ids),
                  "cer_vs_refs": cer(text, ref),
                  "clips_one_by_one_cer_vs_refs": cer(" ".join(clip_text[u] for u in ids), ref),
                  "one_search_cer_vs_refs": one_search_cer(exp, wav, ref)})
            print(f"  CER against the references: {rows[-1]['cer_vs_refs']}% (the same clips "
                  f"one by one: {rows[-1]['clips_one_by_one_cer_vs_refs']}%; searched in one "
                  f"piece, not in segments: {rows[-1]['one_search_cer_vs_refs']}%)", flush=True)

    for row in rows:
        row.pop("stdout")
    result = {"rows": rows, "clip_over_torch_import": ratio, "exp": str(exp),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_average_at_end": os.getloadavg()},
              "git_revision": subprocess.run(
                  ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                  capture_output=True, text=True).stdout.strip()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
