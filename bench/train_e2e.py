#!/usr/bin/env python3
"""Stage 4 end to end: the wall clock of an epoch through run.sh, against espnet2's own train +
valid time of it, and the seed's stack end to end on the same clips.

(a) ours: egs/as_cv7/run.sh stages 0-4 with conf/train_xlsr300m_ctc.yaml as committed (options
    after `--train-args` on top) on a synthetic Common Voice release: `--clips` training clips
    with CV 7.0 Assamese's durations (noise with a slow envelope, random Assamese letters, as
    bench/train_throughput.py makes them), XLS-R 300M's shape with random init, `--epochs`
    epochs. From espnet2's train.log: the time between consecutive epochs' result lines
    (`wall_s_per_epoch`: training, validation and everything done between epochs) and espnet2's
    own train + valid time of each epoch (`train_s_per_epoch`), the first epoch left out
    (cuDNN autotuning, compiling).
(b) the same with espnet2's between-epoch behaviour, to see what (a) changed: checkpoint.pth
    and the epoch model written every epoch before training goes on, the plots drawn every
    epoch, the CUDA cache emptied between phases (`cvasr train`, what stage 4 runs, on (a)'s
    data, `--baseline-epochs` epochs).
(c) the seed's stack: transformers' Wav2Vec2ForCTC + Trainer with the seed's hyper-parameters
    (bf16, 16 x 2, Adam 3e-4, 500 warm-up steps) and its script's defaults for saving and
    evaluation (TrainingArguments': a checkpoint every 500 steps, no evaluation) on (a)'s training
    clips, `--epochs` epochs: `seed_wall_s_per_epoch` from the epochs' end times, the first left
    out.

Prints a table and writes JSON (default bench/results/train_e2e.json). On the GPU machine:

    bench/device_wheels.sh    # here, once: espnet and the rest as wheels in .whl/ (carry it)
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site; python3 -m venv --system-site-packages /tmp/venv
    printf '#!/bin/sh\nexec /tmp/venv/bin/python -m cvasr.cli "$@"\n' > /tmp/venv/bin/cvasr
    chmod +x /tmp/venv/bin/cvasr; export CVASR_PYTHON_ENV=/tmp/venv
    python3 bench/train_e2e.py --epochs 60 --out $OUT/train_e2e.json

    python bench/train_e2e.py --device cpu --arch tiny --clips 24 --epochs 3   # smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import RATE, git_revision, run_seed_stack, synth_clips  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs" / "as_cv7"
CONFIG = RECIPE / "conf" / "train_xlsr300m_ctc.yaml"
#: espnet2's behaviour between epochs, in our options (row b)
ESPNET2_BETWEEN_EPOCHS = ["--checkpoint_every_minutes", "0", "--checkpoint_every_epochs", "0",
                          "--background_checkpoints", "false", "--plot_every_epochs", "1",
                          "--empty_cache_between_phases", "true"]
#: what a CPU smoke run needs on top of the GPU config
CPU_OPTIONS = ["--use_amp", "false", "--optim_conf", "fused=false", "--cudnn_benchmark", "false",
               "--num_workers", "0"]
_STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \(trainer:\d+\) INFO: "
                    r"(\d+)epoch results: \[train\] (.*)\[valid\] (.*)")


def write_release(root: Path, clips: list[tuple[str, np.ndarray, str]], n_dev: int) -> None:
    """A Common Voice 7.0-layout release of the clips (16 kHz wav: the recipe takes any rate):
    the last `n_dev` for dev and test, the rest for train."""
    import soundfile as sf

    from cvasr.corpora.commonvoice import CV7_HEADER, SPLIT_FILES

    (root / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    for utt, wav, text in clips:
        name = f"{utt}.wav"
        if not (root / "clips" / name).is_file():
            sf.write(root / "clips" / name, wav, RATE, subtype="PCM_16")
        rows.append([utt.split("-")[0], name, text, "2", "0", "", "", "", "as", ""])
    parts = {"train": rows[:-n_dev], "dev": rows[-n_dev:], "test": rows[-n_dev:],
             "validated": rows, "invalidated": [], "other": []}
    for split, part in parts.items():
        lines = ["\t".join(CV7_HEADER)] + ["\t".join(r) for r in part]
        (root / SPLIT_FILES[split]).write_text("\n".join(lines) + "\n", encoding="utf-8")


_UNIT_SECONDS = {"hour": 3600, "minute": 60, "second": 1}


def _seconds(text: str) -> float:
    """espnet2's humanfriendly durations: '7.41 seconds', '1 second' (an epoch of 1.0 s, round
    16's compiled run), '1 minute and 22.46 seconds', '1 hour, 2 minutes and 3 seconds'."""
    parts = re.findall(r"([0-9.]+) (hour|minute|second)s?\b", text)
    if not parts or re.sub(r"[0-9.]+ (hour|minute|second)s?|,| and ", "", text).strip():
        raise ValueError(f"cannot read a duration from {text!r}")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in parts)


def espnet2_epochs(train_log: Path) -> list[dict]:
    """Per epoch: when espnet2 logged its results, and its train and valid seconds."""
    rows = []
    for line in train_log.read_text(encoding="utf-8").splitlines():
        m = _STAMP.search(line)
        if not m:
            continue
        when = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        times = [re.search(r"(?:^|, )time=(.*?)(?=, [a-z_]+=|$)", part) for part in m.groups()[2:]]
        rows.append({"epoch": int(m.group(2)), "logged_at": when,
                     "train_seconds": _seconds(times[0].group(1)),
                     "valid_seconds": _seconds(times[1].group(1)) if times[1] else 0.0})
    return rows


def transformer_compiled(train_log: Path) -> bool | None:
    """Whether the run compiled the transformer: the last `--compile_upstream` of the command
    stage 4 logged first in train.log (what `compile_upstream: auto` settled on included); None
    where the log names none. Round 15's two runs meant to be compiled ran eager unseen."""
    for line in train_log.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            words = line[2:].split()
            values = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--compile_upstream"]
            return values[-1].lower() == "true" if values else None
    return None


def per_epoch(rows: list[dict]) -> dict:
    """wall_s_per_epoch and train_s_per_epoch over epochs 2.. (see the module docstring)."""
    if len(rows) < 3:
        raise ValueError(f"need at least 3 epochs to time, got {len(rows)}")
    timed = rows[1:]
    wall = (rows[-1]["logged_at"] - rows[0]["logged_at"]) / (len(rows) - 1)
    train = float(np.mean([r["train_seconds"] + r["valid_seconds"] for r in timed]))
    return {"epochs": len(rows), "epochs_timed": len(timed), "wall_s_per_epoch": round(wall, 3),
            "train_s_per_epoch": round(train, 3),
            "wall_over_train": round(wall / train, 3),
            "first_epoch_wall_s": None}


def run(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run `cmd`, its output to `log`; the wall seconds it took."""
    start = time.perf_counter()
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"# {shlex.join(cmd)}\n")
        out.flush()
        status = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if status != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(True)[-30:])
        raise RuntimeError(f"{cmd[0]} failed ({status}); the end of {log}:\n{tail}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--arch", default="xls_r_300m", help="cvasr make-upstream architecture")
    parser.add_argument("--clips", type=int, default=560, help="training clips (the demo's 560)")
    parser.add_argument("--dev-clips", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--baseline-epochs", type=int, default=12)
    parser.add_argument("--seed-epochs", type=int, default=None,
                        help="epochs of (c), the seed's stack (default: --epochs)")
    parser.add_argument("--resume-epochs", type=int, default=0,
                        help="after (a), run stage 4 again for this many more epochs: the "
                             "first epoch of a resumed run, its compile from the cache the "
                             "first run left in the experiment dir")
    parser.add_argument("--only", nargs="*", default=["ours", "baseline", "seed"],
                        help="which of ours, baseline, seed to run")
    parser.add_argument("--train-args", default="", help="espnet2 options on top of the config")
    parser.add_argument("--name", default="ours",
                        help="the key of (a) in the JSON's runs (e.g. ours_eager for a run "
                             "with --train-args '--compile_upstream false')")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                        help="no run: merge the runs of these JSONs (e.g. (a) on one GPU, "
                             "another (a) and (c) on a second GPU of the same machine) into "
                             "--out, with the summary and table")
    parser.add_argument("--revisions-may-differ", action="store_true",
                        help="with --merge: JSONs of revisions that differ outside the code "
                             "timed (say, this script) still merge; all their revisions named")
    parser.add_argument("--nj", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cvasr-bench-e2e"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_e2e.json")
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.out, args.revisions_may_differ)

    import torch

    from cvasr.models.upstream import write_random_upstream
    from cvasr.text.tokens import read_token_list

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: use --device cpu --arch tiny for a smoke run")
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "bench.log"
    clips = synth_clips(args.clips + args.dev_clips)
    release = args.work / "release" / "as"
    write_release(release, clips, args.dev_clips)
    train_clips = clips[:-args.dev_clips]
    audio_per_epoch = sum(len(w) for _, w, _ in train_clips) / RATE
    upstream = args.work / f"{args.arch}_random.pt"
    if not upstream.is_file():
        write_random_upstream(args.arch, upstream)
    extra = args.train_args.split() + (CPU_OPTIONS if args.device == "cpu" else [])
    work = args.work / "recipe"
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu"
    result: dict = {"benchmark": "train_e2e", "git_revision": git_revision(), "gpu": gpu,
                    "torch": torch.__version__, "python": platform.python_version(),
                    "config": CONFIG.name, "arch": args.arch, "clips": len(train_clips),
                    "audio_seconds_per_epoch": round(audio_per_epoch, 1),
                    "train_args": extra, "runs": {}}

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    recipe_cmd = [str(RECIPE / "run.sh"), "--cv_root", str(release), "--upstream_ckpt",
                  str(upstream), "--work_dir", str(work), "--ngpu",
                  "1" if args.device == "cuda" else "0", "--use_lm", "false", "--nj",
                  str(args.nj)]
    exp = work / "exp" / "asr_train_xlsr300m_ctc_char"
    if "ours" in args.only:
        print(f"(a) ours: run.sh stages 0-3, then stage 4 for {args.epochs} epochs", flush=True)
        if exp.exists():  # an earlier run's experiment would be resumed, not timed
            shutil.rmtree(exp)
        run([*recipe_cmd, "--stop-stage", "3"], log)
        stage4 = run([*recipe_cmd, "--stage", "4", "--stop-stage", "4", "--train_args",
                      " ".join(["--max_epoch", str(args.epochs), *extra])], log)
        rows = espnet2_epochs(exp / "train.log")
        ours = per_epoch(rows)
        first = rows[0]["train_seconds"] + rows[0]["valid_seconds"]
        ours.update(train_args=args.train_args.split(),
                    transformer_compiled=transformer_compiled(exp / "train.log"),
                    stage4_wall_s=round(stage4, 1), first_epoch_wall_s=round(first, 1),
                    first_epoch_over_warm_s=round(first - ours["wall_s_per_epoch"], 1),
                    checkpoints=sorted(p.name for p in exp.glob("*.pth")), epochs_log=rows)
        result["runs"][args.name] = ours
        save()  # kept if the resumed run below is cut short
        if args.resume_epochs:
            print(f"  resumed for {args.resume_epochs} more epochs", flush=True)
            resumed_wall = run([*recipe_cmd, "--stage", "4", "--stop-stage", "4", "--train_args",
                                " ".join(["--max_epoch", str(args.epochs + args.resume_epochs),
                                          *extra])], log)
            resumed = espnet2_epochs(exp / "train.log")[len(rows):]
            ours["resumed"] = {
                "stage4_wall_s": round(resumed_wall, 1), "epochs_log": resumed,
                "first_epoch_wall_s": round(resumed[0]["train_seconds"]
                                            + resumed[0]["valid_seconds"], 1)}
        save()
        print(f"  wall {ours['wall_s_per_epoch']} s an epoch, espnet2's train+valid "
              f"{ours['train_s_per_epoch']} s ({ours['wall_over_train']}x); first epoch "
              f"{ours['first_epoch_wall_s']} s; transformer compiled: "
              f"{ours['transformer_compiled']}"
              + (f", first after resuming {ours['resumed']['first_epoch_wall_s']} s"
                 if "resumed" in ours else ""), flush=True)
    if "baseline" in args.only:
        print(f"(b) espnet2's between-epoch behaviour, {args.baseline_epochs} epochs", flush=True)
        base_exp = work / "exp" / "baseline_espnet2_between_epochs"
        resolved = exp / "train_config.resolved.yaml"
        cmd = ["cvasr", "train", "--dump-dir", str(work / "dump"), "--token-list",
               str(work / "data" / "token_list" / "char" / "tokens.txt"), "--config", str(CONFIG),
               "--upstream", str(upstream), "--stats-dir", str(work / "exp" / "asr_stats_char"),
               "--exp-dir", str(base_exp), "--ngpu", "1" if args.device == "cuda" else "0",
               "--", "--max_epoch", str(args.baseline_epochs), *extra, *ESPNET2_BETWEEN_EPOCHS]
        assert resolved.exists() or "ours" not in args.only
        run(cmd, log)
        rows = espnet2_epochs(base_exp / "train.log")
        base = per_epoch(rows)
        base.update(epochs_log=rows)
        result["runs"]["baseline_espnet2_between_epochs"] = base
        save()
        print(f"  wall {base['wall_s_per_epoch']} s an epoch, espnet2's train+valid "
              f"{base['train_s_per_epoch']} s ({base['wall_over_train']}x)", flush=True)
    if "seed" in args.only:
        print(f"(c) the seed's stack, {args.seed_epochs or args.epochs} epochs, saving as its "
              "script did", flush=True)
        token_list = work / "data" / "token_list" / "char" / "tokens.txt"
        if not token_list.is_file():  # `--only seed` on a fresh machine: stage 3 writes it
            run([*recipe_cmd, "--stop-stage", "3"], log)
        tokens = read_token_list(token_list)
        from cvasr.models.upstream import ARCHS

        seed_args = argparse.Namespace(device=args.device, epochs=args.seed_epochs or args.epochs,
                                       work=args.work / "seed")
        seed = run_seed_stack(train_clips, tokens, ARCHS[args.arch], seed_args,
                              group_by_length=False, script_defaults=True)
        ends = [e["end"] for e in seed["epochs"]]
        seed["wall_s_per_epoch"] = round((ends[-1] - ends[0]) / (len(ends) - 1), 3)
        seed["first_epoch_wall_s"] = round(ends[0], 1)
        result["runs"]["seed"] = seed
        save()
        print(f"  wall {seed['wall_s_per_epoch']} s an epoch", flush=True)

    finish(result, args.out)
    return 0


#: the table's label of each run key
LABELS = {"ours": "(a) ours, committed config, through run.sh",
          "ours_eager": "(a') ours, transformer not compiled, through run.sh",
          "baseline_espnet2_between_epochs": "(b) ours, espnet2's between-epoch behaviour",
          "seed": "(c) seed's stack, its script's saving defaults"}


#: epochs left out of `wall_s_per_epoch_after_warm_up` (the seed's stack takes 3-4 epochs to
#: settle: bench/NOTES.md, round 5)
WARM_UP_EPOCHS = 4


def epoch_walls(run: dict) -> list[float]:
    """Each epoch's wall seconds after the first, from the epochs' end times (ours: when espnet2
    logged the epoch's results; the seed's stack: its epoch-end callback)."""
    if "epochs_log" in run:
        ends = [e["logged_at"] for e in run["epochs_log"]]
    elif isinstance(run.get("epochs"), list):
        ends = [e["end"] for e in run["epochs"]]
    else:
        return []
    return [b - a for a, b in zip(ends, ends[1:])]


def spread(run: dict) -> dict:
    """How the epochs' wall times spread: the median, the mean without the first
    WARM_UP_EPOCHS epochs, and the three slowest epochs (number, seconds)."""
    walls = epoch_walls(run)
    slowest = sorted(range(len(walls)), key=lambda i: -walls[i])[:3]
    return {"median_wall_s_per_epoch": round(float(np.median(walls)), 3),
            "wall_s_per_epoch_after_warm_up": round(float(np.mean(walls[WARM_UP_EPOCHS - 1:])), 3),
            "slowest_epochs": [[i + 2, round(walls[i], 2)] for i in sorted(slowest)]}


def finish(result: dict, out: Path) -> None:
    """The summary figures (ours and each other (a) against the seed's stack), the JSON, the
    table."""
    runs = result["runs"]
    for r in runs.values():
        if len(epoch_walls(r)) > WARM_UP_EPOCHS:
            r.update(spread(r))
    if "ours" in runs and "seed" in runs:
        result["seed_wall_s_per_epoch"] = runs["seed"]["wall_s_per_epoch"]
        result["wall_s_per_epoch"] = runs["ours"]["wall_s_per_epoch"]
        result["train_s_per_epoch"] = runs["ours"]["train_s_per_epoch"]
    if "seed" in runs:
        for name, r in runs.items():
            if name.startswith("ours"):
                key = "speedup_end_to_end" + name[len("ours"):]
                result[key] = round(runs["seed"]["wall_s_per_epoch"] / r["wall_s_per_epoch"], 2)
                for figure, suffix in (("median_wall_s_per_epoch", "median"),
                                       ("wall_s_per_epoch_after_warm_up", "after_warm_up")):
                    if figure in r and figure in runs["seed"]:  # kept with the run
                        r[f"speedup_end_to_end_{suffix}"] = round(runs["seed"][figure]
                                                                  / r[figure], 2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['arch']}, {result['clips']} clips ({result['audio_seconds_per_epoch']:.0f} "
          f"audio-s an epoch), {result['gpu']}, torch {result['torch']}; the first epoch of "
          "each run not timed")
    print(f"| {'run':<52} | {'epochs':>6} | {'wall s/epoch':>12} | {'train+valid s':>13} | "
          f"{'first epoch s':>13} |")
    print(f"|{'-' * 54}|{'-' * 8}|{'-' * 14}|{'-' * 15}|{'-' * 15}|")
    for name, r in runs.items():
        train = f"{r['train_s_per_epoch']:13.3f}" if "train_s_per_epoch" in r else f"{'-':>13}"
        first = (f"{r['first_epoch_wall_s']:13.1f}" if r.get("first_epoch_wall_s") is not None
                 else f"{'-':>13}")
        label = LABELS.get(name, name)
        if r.get("train_args"):  # options over the committed config: the label says which
            label = f"{label.split(', through')[0]} + {' '.join(r['train_args'])}"
        if r.get("transformer_compiled") is False:
            label += " [eager]"
        print(f"| {label:<52} | "
              f"{len(r.get('epochs_log', r.get('epochs', []))):>6} | "
              f"{r['wall_s_per_epoch']:12.3f} | {train} | {first} |")
    for key, value in result.items():
        if key.startswith("speedup_end_to_end"):
            run = "ours" + key[len("speedup_end_to_end"):]
            others = ", ".join(f"{suffix.replace('_', ' ')} {runs[run][k]}x"
                               for suffix in ("median", "after_warm_up")
                               if (k := f"speedup_end_to_end_{suffix}") in runs[run])
            print(f"end to end, {run}: {value}x the seed's stack"
                  + (f" ({others})" if others else "")
                  + f"; wall/train {runs[run]['wall_over_train']}x")
    print(f"saved {out}")


def merge(paths: list[Path], out: Path, revisions_may_differ: bool = False) -> int:
    """One result from the runs of several (same machine, same clips, same revision; with
    `revisions_may_differ`, revisions that differ only outside the code timed, such as this
    script, all named in the result's git_revision)."""
    parts = [json.loads(p.read_text()) for p in paths]
    same = ("git_revision", "arch", "clips", "audio_seconds_per_epoch", "torch")
    if revisions_may_differ:
        same = tuple(k for k in same if k != "git_revision")
    for part, path in zip(parts[1:], paths[1:]):
        differ = [k for k in same if part.get(k) != parts[0].get(k)]
        if differ:
            raise SystemExit(f"{path} differs from {paths[0]} in {differ}: not one comparison")
    result = {k: v for k, v in parts[0].items() if k in (
        "benchmark", "git_revision", "gpu", "torch", "python", "config", "arch", "clips",
        "audio_seconds_per_epoch")}
    revisions = list(dict.fromkeys(part.get("git_revision") for part in parts))
    if len(revisions) > 1:
        result["git_revision"] = " / ".join(map(str, revisions))
    result["merged_from"] = [{"file": str(p), "git_revision": part.get("git_revision"),
                              "train_args": part.get("train_args"),
                              "runs": sorted(part["runs"])} for p, part in zip(paths, parts)]
    result["runs"] = {}
    for path, part in zip(paths, parts):
        for name, r in part["runs"].items():
            if name in result["runs"]:
                raise SystemExit(f"{path}: run {name} is in two of the files (see --name)")
            result["runs"][name] = r
    finish(result, out)
    return 0

if __name__ == "__main__":
    sys.exit(main())
