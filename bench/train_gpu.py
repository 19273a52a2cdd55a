#!/usr/bin/env python3
"""Stage 4 on GPUs: the full-shape XLS-R 300M (random init) + CTC on the demo corpus, 1 and N GPUs.

Runs the recipe's own stage 1-4 code (data prep, dump, token list, espnet2 collect-stats, espnet2
training with conf/train_xlsr300m_ctc.yaml, and espnet2 options given after `--` over it) for a
few epochs on each GPU count, then reads espnet2's per-epoch results:
iterations per second, optimizer steps per second, audio-seconds per second (all GPUs together)
and peak GPU memory. The first epoch (warm-up, cuDNN autotuning) is reported but not averaged.

    python bench/train_gpu.py --release path/to/demo_corpus --gpus 1 2 --epochs 4
    python bench/train_gpu.py --release path/to/demo_corpus -- --compile_upstream false
    python bench/train_gpu.py --synth-hours 10 --batch-per-gpu 32 --gpus 1 2 --epochs 3
    python bench/train_gpu.py --synth-hours 10 --batch-per-gpu 32 --launchers espnet2 torchrun \
        torchrun_2nodes

`--launchers`: for each GPU count above 1, a run started by espnet2's own launcher (one process
that spawns one a GPU), by torchrun, and by torchrun as 2 nodes on this machine (the multi-node
path: node ranks, a TCP rendezvous); the JSON has `scaling_2gpu`, `scaling_2gpu_torchrun` and
`scaling_2gpu_torchrun_2nodes`.

`--try NAME=OPTIONS` (repeatable): one more run on the most GPUs, by espnet2's launcher, with
these espnet2 options over the others (e.g. `bf16_hook=--ddp_comm_hook bf16_compress_hook`);
OPTIONS may start with environment settings for that run's processes, as in a shell
(`nccl_8ctas=NCCL_MAX_CTAS=8`, NCCL reads its settings only from the environment);
the JSON has `scaling_2gpu_NAME` from the same run's 1-GPU figure.

`--synth-hours`: instead of a release, a synthetic one of that many hours of training audio
with CV 7.0 Assamese's durations (bench/train_throughput.py's clips: noise with an envelope,
random letters), for scaling runs on more than the demo's 45 minutes. `--batch-per-gpu B`: the
batch is B x GPUs (espnet2 splits each batch over the GPUs, so every GPU steps on B clips, as
when a user adds GPUs to go faster); the JSON then has `scaling_2gpu` (2-GPU over 1-GPU
audio-s/s, same run) and `corpus_hours`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import git_revision  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "egs" / "as_cv7" / "conf" / "train_xlsr300m_ctc.yaml"


def _seconds(text: str) -> float:
    """espnet2's humanfriendly durations: '7.41 seconds', '1 minute and 22.46 seconds'."""
    m = re.match(r"(?:(\d+) minutes? and )?([0-9.]+) seconds", text)
    if not m:
        raise ValueError(f"cannot read a duration from {text!r}")
    return 60 * int(m.group(1) or 0) + float(m.group(2))


def epoch_rows(lines: list[str]) -> list[dict[str, float]]:
    """Per-epoch training figures from espnet2's log lines of one run (rank 0)."""
    rows = []
    for line in lines:
        m = re.search(r"(\d+)epoch results: \[train\] (.*?)\[valid\]", line)
        if not m:
            continue
        train = dict(re.findall(r"(\w+)=([0-9.e+-]+)", m.group(2)))
        duration = re.search(r"(?:^|, )time=(.*?seconds)", m.group(2))
        rows.append({"epoch": int(m.group(1)), "train_seconds": _seconds(duration.group(1)),
                     "iterations": float(train["total_count"]),
                     "loss_ctc": float(train["loss_ctc"]),
                     "peak_mem_gb": float(train.get("gpu_max_cached_mem_GB", "nan"))})
    for prev, row in zip([None, *rows], rows):  # total_count is cumulative
        row["iterations_in_epoch"] = row["iterations"] - (prev["iterations"] if prev else 0)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", type=Path, help="demo corpus (CV layout)")
    parser.add_argument("--synth-hours", type=float, default=None,
                        help="a synthetic release of this many hours of training audio instead")
    parser.add_argument("--batch-per-gpu", type=int, default=None,
                        help="clips a GPU steps on: --batch_size this x GPUs (default: the "
                             "config's batch, split over the GPUs)")
    parser.add_argument("--summarize", type=Path, default=None,
                        help="only summarise a saved log of an earlier run of this script")
    parser.add_argument("--audio-seconds", type=float, default=None,
                        help="with --summarize: audio-seconds in one epoch of the train set")
    parser.add_argument("--gpu-name", default="", help="with --summarize: the GPU it ran on")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cvasr-bench-gpu"))
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--launchers", nargs="+", default=["espnet2"],
                        choices=["espnet2", "torchrun", "torchrun_2nodes"],
                        help="for every GPU count > 1, a run started by each: espnet2's own "
                             "launcher, torchrun, torchrun as 2 nodes on this machine")
    parser.add_argument("--try", dest="tries", action="append", default=[],
                        metavar="NAME=OPTIONS",
                        help="one more run on the most GPUs (espnet2's launcher) with these "
                             "espnet2 options added: run 2gpu_NAME")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--nj", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_gpu.json")
    parser.add_argument("--accum-grad", type=int, default=None,
                        help="with --summarize: the run's accum_grad (default: the config's)")
    parser.add_argument("extra", nargs="*", metavar="ESPNET2_OPTION",
                        help="after --: espnet2 options over the config, for every GPU count")
    args = parser.parse_args()
    import yaml

    if args.summarize:
        accum = args.accum_grad or int(yaml.safe_load(CONFIG.read_text()).get("accum_grad", 1))
        lines = args.summarize.read_text(encoding="utf-8").splitlines()
        runs = {n: rank0_lines(lines, n) for n in args.gpus}
        results = {f"{n}gpu": summarise(epoch_rows(r), n, args.audio_seconds, accum)
                   for n, r in runs.items()}
        report(results, args, args.gpu_name, "", f"from {args.summarize.name}")
        return 0
    if (args.release is None) == (args.synth_hours is None):
        parser.error("give one of --release and --synth-hours")
    try:
        runs = planned_runs(args.gpus, args.launchers, args.tries)
    except ValueError as err:
        parser.error(str(err))

    import torch

    from cvasr.data.kaldi import read_table
    from cvasr.data.prepare import prepare_data
    from cvasr.data.dump import DumpConfig, dump
    from cvasr.text.tokens import make_token_list
    from cvasr.training.launch import Launch
    from cvasr.training.stages import collect_stats, resolve_config, train
    from cvasr.models.upstream import write_random_upstream

    work = args.work
    release, source = args.release, f"{args.release}"
    if args.synth_hours is not None:
        release = work / "release" / "as"
        source = synth_release(release, args.synth_hours)
    prepare_data(release, work / "data", nj=args.nj, show_progress=False)
    dump(work / "data", work / "dump", DumpConfig(nj=args.nj), show_progress=False)
    upstream = work / "xls_r_300m_random.pt"
    if not upstream.is_file():
        write_random_upstream("xls_r_300m", upstream)
    tokens = make_token_list(work / "dump" / "train" / "text", work / "token_list" / "char")
    resolved = work / "train_xlsr300m_ctc.resolved.yaml"
    resolve_config(CONFIG, str(upstream), work / "dl", resolved)
    collect_stats(work / "dump", tokens, resolved, work / "stats")
    samples = read_table(work / "dump" / "train" / "utt2num_samples")
    audio_per_epoch = sum(int(n) for n in samples.values()) / 16000

    results = {}
    for name, n, launcher, tried, tried_env in runs:
        exp = work / f"exp_{name}"
        batch = ["--batch_size", str(args.batch_per_gpu * n)] if args.batch_per_gpu else []
        launch = Launch(launcher.split("_")[0], nnodes=2 if launcher.endswith("2nodes") else 1,
                        local_nodes=launcher.endswith("2nodes"))
        try:
            with environment(tried_env):
                train(work / "dump", tokens, work / "stats", resolved, exp, ngpu=n,
                      extra_args=["--max_epoch", str(args.epochs), "--keep_nbest_models", "1",
                                  *batch, *args.extra, *tried], launch=launch)
        except RuntimeError as err:  # the other runs still run and are reported
            print(f"{name} failed: {err}", flush=True)
            continue
        lines = (exp / "train.log").read_text(encoding="utf-8").splitlines()
        rank0 = rank0_lines(lines, n)
        ran = yaml.safe_load((exp / "config.yaml").read_text())  # espnet2's, options applied
        results[name] = summarise(epoch_rows(rank0), n, audio_per_epoch, ran["accum_grad"])
        results[name]["launcher"] = launcher
        if tried:
            results[name]["extra_options"] = tried
        if tried_env:
            results[name]["extra_environment"] = tried_env
        # after every run: a run cut short by a time limit leaves the ones before it
        report(results, args, torch.cuda.get_device_name(0), torch.__version__,
               f"{len(samples)} clips, {audio_per_epoch / 3600:.2f} h ({source})",
               corpus_hours=round(audio_per_epoch / 3600, 2))
    return 0


#: an environment setting at the start of a try's OPTIONS (`NCCL_MAX_CTAS=8`)
ENV_SETTING = re.compile(r"([A-Z][A-Z0-9_]*)=(.*)")


def planned_runs(gpus: list[int], launchers: list[str], tries: list[str]
                 ) -> list[tuple[str, int, str, list[str], dict[str, str]]]:
    """(name, GPUs, launcher, added espnet2 options, added environment) of each run, in order:
    1 GPU, each launcher on every larger count, then each `NAME=OPTIONS` try on the most GPUs
    (espnet2's launcher; OPTIONS' leading `VAR=value` words are its environment)."""
    runs = [(f"{n}gpu" + ("" if launcher == "espnet2" else f"_{launcher}"), n, launcher, [], {})
            for n, launcher in [(n, "espnet2") for n in gpus if n == 1]
            + [(n, launcher) for n in gpus if n > 1 for launcher in launchers]]
    for spec in tries:
        label, sep, options = spec.partition("=")
        words = options.split()
        env = {}
        while words and (m := ENV_SETTING.fullmatch(words[0])):
            env[m.group(1)] = m.group(2)
            words.pop(0)
        if not sep or not re.fullmatch(r"\w+", label) or not (words or env):
            raise ValueError(f"--try {spec!r}: expected NAME=OPTIONS (NAME of letters, digits "
                             "and _, at least one option or VAR=value)")
        runs.append((f"{max(gpus)}gpu_{label}", max(gpus), "espnet2", words, env))
    return runs


@contextlib.contextmanager
def environment(settings: dict[str, str]):
    """os.environ with `settings` added while the block runs (the training processes inherit
    it), as it was afterwards."""
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def synth_release(root: Path, hours: float, dev_clips: int = 80) -> str:
    """A Common Voice 7.0-layout release with `hours` of training audio (and `dev_clips` for
    dev and test); what it is, in words."""
    from train_e2e import write_release
    from train_throughput import clip_durations, synth_clips

    durations = clip_durations(int(hours * 3600 / 4) + dev_clips)
    n = int(np.searchsorted(np.cumsum(durations), hours * 3600)) + 1  # clips that fill `hours`
    write_release(root, synth_clips(n + dev_clips), dev_clips)
    return f"synthetic, CV 7.0 Assamese durations, {n} training clips"


def rank0_lines(lines: list[str], n: int) -> list[str]:
    """The lines of rank 0 of an n-process run: espnet2 prefixes them `[host:0/n]`."""
    if n == 1:  # `[host]`: no rank
        return [ln for ln in lines if not re.match(r"\[[^\]]*:\d+/\d+\]", ln)]
    return [ln for ln in lines if re.match(rf"\[[^\]]*:0/{n}\]", ln)]


def summarise(rows: list[dict[str, float]], n: int, audio_per_epoch: float,
              accum_grad: int) -> dict:
    """Throughput over the epochs after the first; iterations are per process, so x n GPUs."""
    timed = rows[1:] or rows
    seconds = sum(r["train_seconds"] for r in timed)
    iterations = sum(r["iterations_in_epoch"] for r in timed)
    return {
        "gpus": n, "epochs": rows, "audio_seconds_per_epoch": round(audio_per_epoch, 1),
        "iterations_per_s_per_process": round(iterations / seconds, 2),
        # espnet2 splits each batch over the GPUs; accum_grad batches make an optimizer step
        "optimizer_steps_per_s": round(iterations / accum_grad / seconds, 2),
        "accum_grad": accum_grad,
        "audio_seconds_per_s": round(audio_per_epoch * len(timed) / seconds, 1),
        "peak_mem_gb": max(r["peak_mem_gb"] for r in rows),
    }


def report(results: dict, args: argparse.Namespace, gpu: str, torch_version: str,
           source: str, corpus_hours: float | None = None) -> None:
    options = ("the options of that run" if args.summarize
               else " ".join(args.extra) or "as committed")
    print(f"XLS-R 300M shape (random init) + CTC, espnet2 stage 4, {source}, "
          f"{CONFIG.name} ({options}), {gpu}; epoch 1 excluded")
    print(f"| {'run':<20} | {'epochs timed':>12} | {'steps/s':>7} | {'audio-s/s':>9} | "
          f"{'peak GiB':>8} | {'scaling':>7} |")
    print(f"|{'-' * 22}|--------------|---------|-----------|----------|---------|")
    base = next(iter(results.values()), {}).get("audio_seconds_per_s", 1.0)
    for name, r in results.items():
        print(f"| {name:<20} | {len(r['epochs']) - 1:>12} | {r['optimizer_steps_per_s']:7.2f} | "
              f"{r['audio_seconds_per_s']:9.1f} | {r['peak_mem_gb']:8.1f} | "
              f"{r['audio_seconds_per_s'] / base:6.2f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name in results:  # scaling_2gpu (espnet2's launcher), scaling_2gpu_torchrun, ...
        if "1gpu" in results and name.startswith("2gpu"):
            summary[f"scaling_{name}"] = round(results[name]["audio_seconds_per_s"]
                                               / results["1gpu"]["audio_seconds_per_s"], 3)
    if corpus_hours is not None:
        summary["corpus_hours"] = corpus_hours
    args.out.write_text(json.dumps({
        "benchmark": "train_gpu", "gpu": gpu, "torch": torch_version, "source": source,
        "python": platform.python_version(), "git_revision": git_revision(),
        "config": str(CONFIG.name),
        "options": args.extra, "batch_per_gpu": args.batch_per_gpu, **summary,
        "results": results}, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    sys.exit(main())
