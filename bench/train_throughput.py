#!/usr/bin/env python3
"""Training throughput on one GPU: the seed's stack against our stage-4 step, same clips, same run.

(a) the seed's stack: transformers' Wav2Vec2ForCTC of XLS-R 300M's shape (random init, feature
    encoder frozen, SDPA attention) trained by transformers' Trainer with bf16 AMP, batches of 16
    clips x accumulation 2, once with the Trainer's default random batches and once with
    `group_by_length=True`;
(b) our stage 4: espnet2's ASR model as conf/train_xlsr300m_ctc.yaml builds it (s3prl wav2vec 2.0
    upstream of XLS-R 300M's shape written by `cvasr make-upstream`, random init), fed by espnet2's
    own iterator from a stage-2 dump, trained by espnet2's Trainer.train_one_epoch. It runs once
    per row of STEPS: the first row is the seed's settings on espnet2, each next row adds one
    change, the last row is the committed config as a long run trains (its `compile_upstream:
    auto` on: stage 4 compiles from defaults.COMPILE_PAYS_AFTER_STEPS planned steps).

The clips are synthetic (noise, random Assamese letters), their durations drawn like CV 7.0
Assamese (mean 5.3 s, 1.5-10 s; 508 clips, the size of its train set). Every run trains whole
epochs over them; the first `--warmup-epochs` epochs (cuDNN autotuning, torch.compile) are not
timed. Prints a table and saves JSON (GPU name, torch version, git revision, every epoch).

    python bench/train_throughput.py                        # GPU, the real shapes
    python bench/train_throughput.py --arch tiny --device cpu --clips 24 --epochs 2   # smoke run

On a fresh machine the transformer's compile takes minutes; `--compile-cache FILE` loads
torch.compile's caches from FILE and saves them there after every row (carry the file to the
next machine). bench/NOTES.md has the command of every run kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import lzma
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "egs" / "as_cv7" / "conf" / "train_xlsr300m_ctc.yaml"
RATE = 16000
LETTERS = [chr(c) for c in range(0x0995, 0x09B9)] + ["া", "ি", "ী", "ু", "ে", "ো"]

#: options the committed config turned on in a later row: off in the rows before it
NOT_COMPILED = ["--compile_upstream", "false"]
NOT_SYNC_FREE_STEP = ["--sync_free_step", "false"]
NOT_PERSISTENT = ["--persistent_workers", "false"]
#: espnet2's SpecAugment and PyTorch's CTC (their host syncs), the compiled transformer replayed
#: without CUDA graphs
NOT_GRAPHED = ["--compile_mode", "default", "--specaug", "specaug",
               "--model_conf", "ctc_impl=torch"]
#: the checkpoint's own (pre-training) dropouts, 0.1 on hidden states and attention, as every
#: row up to round 16 trained: the committed config sets the seed's fine-tuning ones (0.0)
PRETRAINING_DROPOUTS = ["--frontend_conf", "upstream_dropouts=null"]
#: the linear layers' weights cast by autocast every step and the clip a pass of its own
NOT_COPIES = ["--bf16_weight_copies", "false", "--clip_in_optimizer", "false"]
LATER = [*NOT_COMPILED, *NOT_SYNC_FREE_STEP, *NOT_PERSISTENT, *NOT_GRAPHED, *PRETRAINING_DROPOUTS,
         *NOT_COPIES]
#: the committed config's `compile_upstream: auto` as stage 4 settles it for a long run (at least
#: defaults.COMPILE_PAYS_AFTER_STEPS steps): the step bench times the step of such a run
LONG_RUN = ["--compile_upstream", "true"]
#: (name, espnet2 options over the committed config). Row 1 is the seed's settings on espnet2;
#: each next row adds one change; the last row is the committed config as a long run trains.
STEPS: list[tuple[str, list[str]]] = [
    ("espnet2, seed settings (16x2, Adam, fp32 upstream)",
     [*LATER, "--frontend", "s3prl", "--batch_size", "16", "--accum_grad", "2",
      "--cudnn_benchmark", "false", "--optim_conf", "fused=false",
      "--model_conf", "autocast_frontend=false"]),
    ("+ bf16 autocast in the upstream too",
     [*LATER, "--frontend", "s3prl", "--batch_size", "16", "--accum_grad", "2",
      "--cudnn_benchmark", "false", "--optim_conf", "fused=false"]),
    ("+ 32 clips a batch, no accumulation",
     [*LATER, "--frontend", "s3prl", "--cudnn_benchmark", "false", "--optim_conf", "fused=false"]),
    ("+ cuDNN autotuning", [*LATER, "--frontend", "s3prl", "--optim_conf", "fused=false"]),
    ("+ fused Adam", [*LATER, "--frontend", "s3prl"]),
    ("+ frontend without host syncs", [*LATER, "--frontend_conf", "cache_conv_features=false"]),
    ("+ frozen conv features cached", LATER),
    ("+ training step without host syncs",
     [*NOT_COMPILED, *NOT_PERSISTENT, *NOT_GRAPHED, *PRETRAINING_DROPOUTS, *NOT_COPIES]),
    ("+ the transformer compiled as one graph",
     [*NOT_PERSISTENT, *NOT_GRAPHED, *PRETRAINING_DROPOUTS, *NOT_COPIES, *LONG_RUN]),
    ("+ DataLoader workers kept across epochs",
     [*NOT_GRAPHED, *PRETRAINING_DROPOUTS, *NOT_COPIES, *LONG_RUN]),
    ("+ CUDA graphs, CTC and SpecAugment without host syncs",
     [*PRETRAINING_DROPOUTS, *NOT_COPIES, *LONG_RUN]),
    ("+ the seed's fine-tuning dropouts (0.0)", [*NOT_COPIES, *LONG_RUN]),
    ("+ bf16 weight copies, clip in fused Adam (= committed config)", LONG_RUN),
]


# ---------------------------------------------------------------- the clips
def clip_durations(n: int, seed: int = 0) -> np.ndarray:
    """Durations like CV 7.0 Assamese: gamma-shaped, mean about 5.3 s, clipped to 1.5-10 s."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.gamma(shape=6.0, scale=5.35 / 6.0, size=n), 1.5, 10.0)


def synth_clips(n: int, seed: int = 0) -> list[tuple[str, np.ndarray, str]]:
    """(id, int16 samples, text): noise with a slow envelope, about 11 letters a second."""
    rng = np.random.default_rng(seed + 1)
    clips = []
    for i, dur in enumerate(clip_durations(n, seed)):
        samples = int(dur * RATE)
        envelope = 0.3 + 0.7 * np.abs(np.sin(np.linspace(0, dur * 3.0, samples)))
        wav = (rng.normal(0, 3000, samples) * envelope).clip(-32768, 32767).astype(np.int16)
        letters = rng.choice(LETTERS, size=max(4, int(dur * 11)))
        words, k = [], 0
        while k < len(letters):
            w = int(rng.integers(2, 7))
            words.append("".join(letters[k:k + w]))
            k += w
        clips.append((f"spk{i % 37:02d}-clip{i:04d}", wav, " ".join(words)))
    return clips


def prepare(clips, work: Path, config: Path) -> dict[str, Path]:
    import soundfile as sf

    from cvasr.data.datadir import write_spk2utt
    from cvasr.data.kaldi import write_table
    from cvasr.data.dump import DumpConfig, dump_split
    from cvasr.data.report import PrepReport, SplitReport
    from cvasr.text.tokens import make_token_list
    from cvasr.training.stages import collect_stats

    data, dump_dir = work / "data", work / "dump"
    report = PrepReport()
    for split, part in (("train", clips), ("dev", clips[:16])):
        d = data / split
        (d / "wav").mkdir(parents=True, exist_ok=True)
        scp = {}
        for utt, wav, _ in part:
            path = d / "wav" / f"{utt}.wav"
            sf.write(path, wav, RATE, subtype="PCM_16")
            scp[utt] = str(path)
        write_table(d / "wav.scp", scp)
        write_table(d / "text", {u: t for u, _, t in part})
        write_table(d / "utt2spk", {u: u.split("-")[0] for u, _, _ in part})
        write_spk2utt(d)
        report.splits[split] = SplitReport(listed=len(part))
        dump_split(split, data, dump_dir, report, DumpConfig(max_duration=30.0, nj=4),
                   show_progress=False)
    tokens = make_token_list(dump_dir / "train" / "text", work / "token_list")
    collect_stats(dump_dir, tokens, config, work / "stats")
    return {"dump": dump_dir, "tokens": tokens, "stats": work / "stats"}


# ---------------------------------------------------------------- FLOPs
def flops_per_audio_second(cfg: dict, mean_frames: float) -> float:
    """Forward+backward FLOPs of one audio-second: frozen conv encoder forward only, the rest x3."""
    conv = eval(cfg["conv_feature_layers"])  # noqa: S307 - our own constant from cvasr.models.upstream
    rate, c_in, conv_flops = float(RATE), 1, 0.0
    for c_out, k, s in conv:
        rate /= s
        conv_flops += 2 * c_in * c_out * k * rate
        c_in = c_out
    d, ff, n = cfg["encoder_embed_dim"], cfg["encoder_ffn_embed_dim"], cfg["encoder_layers"]
    per_frame = 2 * c_in * d                                       # post_extract_proj
    per_frame += 2 * d * (d // cfg["conv_pos_groups"]) * cfg["conv_pos"]   # positional conv
    per_frame += n * (2 * (4 * d * d + 2 * d * ff) + 4 * mean_frames * d)  # layers + attention
    return conv_flops + 3 * per_frame * rate


PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, vendor datasheets


def peak_flops(gpu: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in gpu), None)


# ---------------------------------------------------------------- (a) the seed's stack
def hf_config(cfg: dict, vocab: int):
    from transformers import Wav2Vec2Config

    conv = eval(cfg["conv_feature_layers"])  # noqa: S307
    return Wav2Vec2Config(
        vocab_size=vocab, hidden_size=cfg["encoder_embed_dim"],
        num_hidden_layers=cfg["encoder_layers"], num_attention_heads=cfg["encoder_attention_heads"],
        intermediate_size=cfg["encoder_ffn_embed_dim"], feat_extract_norm="layer",
        conv_dim=[c for c, _, _ in conv], conv_kernel=[k for _, k, _ in conv],
        conv_stride=[s for _, _, s in conv], conv_bias=True, do_stable_layer_norm=True,
        num_conv_pos_embeddings=cfg["conv_pos"], num_conv_pos_embedding_groups=cfg["conv_pos_groups"],
        # the seed's fine-tuning settings (HF's XLS-R fine-tuning: transformers' blog, whose
        # lr, warm-up and batch the seed's card lists); activation_dropout and final_dropout
        # as our model has them (the upstream's 0.0, the CTC head's dropout_rate 0.1), so both
        # stacks draw dropout masks in the same places
        attention_dropout=0.0, hidden_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
        activation_dropout=0.0, final_dropout=0.1,
        mask_time_prob=0.05, ctc_loss_reduction="mean", pad_token_id=0)


def run_seed_stack(clips, tokens: list[str], cfg: dict, args, group_by_length: bool,
                   script_defaults: bool = False) -> dict:
    """The seed's stack over `clips` for args.epochs epochs. With `script_defaults` it saves and
    logs as the seed's script did: transformers' TrainingArguments defaults (a checkpoint every
    500 steps, a log line every 500, no evaluation), for end-to-end wall clock; else it neither
    saves nor logs (the step alone)."""
    import torch
    from transformers import (Trainer, TrainerCallback, TrainingArguments, Wav2Vec2FeatureExtractor,
                              Wav2Vec2ForCTC)

    index = {t: i for i, t in enumerate(tokens)}
    unk = index.get("<unk>", 1)

    class Clips(torch.utils.data.Dataset):
        def __init__(self):
            self.items = []
            for _, wav, text in clips:
                x = wav.astype(np.float32) / 32768.0
                x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)  # the feature extractor's normalising
                labels = [index.get("<space>" if ch == " " else ch, unk) for ch in text]
                self.items.append({"input_values": x, "labels": labels})

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    def collate(features):  # what the seed's DataCollatorCTCWithPadding does (padding=True)
        longest = max(len(f["input_values"]) for f in features)
        longest_label = max(len(f["labels"]) for f in features)
        values = torch.zeros(len(features), longest)
        mask = torch.zeros(len(features), longest, dtype=torch.long)
        labels = torch.full((len(features), longest_label), -100, dtype=torch.long)
        for b, f in enumerate(features):
            values[b, : len(f["input_values"])] = torch.from_numpy(f["input_values"])
            mask[b, : len(f["input_values"])] = 1
            labels[b, : len(f["labels"])] = torch.tensor(f["labels"])
        return {"input_values": values, "attention_mask": mask, "labels": labels}

    epochs: list[dict] = []

    class Timer(TrainerCallback):
        def on_epoch_begin(self, *a, **k):
            if args.device == "cuda":
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_epoch_end(self, args_, state, control, **k):
            if args.device == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            epochs.append({"epoch": len(epochs) + 1, "train_seconds": now - self.start,
                           "global_step": state.global_step, "end": now})

    torch.manual_seed(0)
    model = Wav2Vec2ForCTC._from_config(hf_config(cfg, len(tokens)), attn_implementation="sdpa")
    model.freeze_feature_encoder()
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=RATE, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=True)
    # transformers < 5.20 spells length grouping `group_by_length`, later `train_sampling_strategy`
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    grouping = ({"group_by_length": group_by_length} if "group_by_length" in names else
                {"train_sampling_strategy": "group_by_length" if group_by_length else "random"})
    targs = TrainingArguments(
        **grouping, output_dir=str(args.work / "hf"), per_device_train_batch_size=16,
        gradient_accumulation_steps=2, num_train_epochs=args.epochs, learning_rate=3e-4,
        warmup_steps=500, bf16=args.device == "cuda", use_cpu=args.device == "cpu",
        report_to=[], disable_tqdm=True, remove_unused_columns=False, seed=0,
        dataloader_num_workers=0,
        **({} if script_defaults else {"save_strategy": "no", "logging_strategy": "no"}))
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(model=model, args=targs, train_dataset=Clips(), data_collator=collate,
                      processing_class=extractor, callbacks=[Timer()])
    started = time.perf_counter()
    trainer.train()
    finished = time.perf_counter()
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan")
    for e in epochs:  # seconds from the start of train() (its set-up included in epoch 1)
        e["end"] = round(e["end"] - started, 3)
    result = {"optimizer": str(targs.optim), "steps_per_epoch": epochs[0]["global_step"],
              "peak_mem_gib": round(peak, 2), "epochs": epochs,
              "train_call_seconds": round(finished - started, 3),
              "save_steps": targs.save_steps if script_defaults else None,
              "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
    del trainer, model
    return result


# ---------------------------------------------------------------- (b) our stage 4
#: espnet2's per-step wall times (seconds, CPU side, means over an epoch's steps)
STEP_TIMES = ("iter_time", "forward_time", "backward_time", "optim_step_time", "train_time")


class FirstBatchTimed:
    """The iterator's items, the time the first one came appended to `when`: how long an epoch's
    start waits for its first batch, while the GPU has nothing queued (the bench synchronises
    before each epoch). Keeps the iterator's length: the step's log interval follows from it."""

    def __init__(self, iterator, when: list[float]) -> None:
        self.iterator, self.when = iterator, when

    def __len__(self) -> int:
        return len(self.iterator)

    def __iter__(self):
        for item in self.iterator:
            if not self.when:
                self.when.append(time.perf_counter())
            yield item


def run_espnet2(paths: dict[str, Path], resolved: Path, extra: list[str], args,
                profile: Path | None = None, on_timed=None) -> dict:
    """Build model, optimizer and iterator as espnet2's main_worker does, then time epochs."""
    import torch
    from espnet2.tasks.abs_task import scheduler_classes
    from espnet2.train.distributed_utils import DistributedOption, resolve_distributed_mode
    from espnet2.train.reporter import Reporter
    from espnet2.train.trainer import GradScaler
    from espnet2.utils.build_dataclass import build_dataclass

    from cvasr.speedups.persistent_loader import PersistentSequenceIterFactory
    from cvasr.training.task import CvasrASRTask
    from cvasr.training.stages import _data_args, _token_args

    if "s3prl" in extra:  # espnet2's own frontend does not take our frontend's options
        import yaml

        conf = yaml.safe_load(resolved.read_text())
        conf["frontend_conf"].pop("cache_conv_features", None)
        conf["frontend_conf"].pop("upstream_dropouts", None)  # the checkpoint's: rows 1-5
        resolved = resolved.with_name("config.s3prl.yaml")
        resolved.write_text(yaml.safe_dump(conf))
    argv = [*_token_args(paths["tokens"]), "--config", str(resolved),
            "--output_dir", str(args.work / "exp"), "--ngpu", "1" if args.device == "cuda" else "0",
            *_data_args(paths["dump"], "train", "train"), *_data_args(paths["dump"], "dev", "valid"),
            "--train_shape_file", str(paths["stats"] / "train" / "speech_shape"),
            "--train_shape_file", str(paths["stats"] / "train" / "text_shape.char"),
            "--valid_shape_file", str(paths["stats"] / "valid" / "speech_shape"),
            "--valid_shape_file", str(paths["stats"] / "valid" / "text_shape.char"),
            *extra, *([] if args.num_workers is None else ["--num_workers", str(args.num_workers)])]
    if args.device == "cpu":
        argv += ["--use_amp", "false", "--optim_conf", "fused=false", "--cudnn_benchmark", "false"]
    parser = CvasrASRTask.get_parser()
    targs = parser.parse_args(argv)
    resolve_distributed_mode(targs)  # single process: distributed = False
    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed

    set_all_random_seed(targs.seed)
    torch.backends.cudnn.benchmark = targs.cudnn_benchmark
    model = CvasrASRTask.build_model(targs).to(args.device)
    for t in targs.freeze_param:
        for k, p in model.named_parameters():
            if k.startswith(t + ".") or k == t:
                p.requires_grad = False
    optimizers = CvasrASRTask.build_optimizers(targs, model=model)
    scheduler = scheduler_classes[targs.scheduler](optimizers[0], **targs.scheduler_conf)
    options = CvasrASRTask.trainer.build_options(targs)
    CvasrASRTask.trainer.prepare_model(model, options)
    dist = build_dataclass(DistributedOption, targs)
    iter_factory = CvasrASRTask.build_iter_factory(targs, dist, mode="train")
    scaler = GradScaler() if targs.use_amp else None  # what espnet2's Trainer.run makes
    reporter = Reporter()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    epochs = []
    for epoch in range(1, args.epochs + 1):
        reporter.set_epoch(epoch)
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        first_batch: list[float] = []
        with reporter.observe("train") as sub:
            CvasrASRTask.trainer.train_one_epoch(
                model=model, iterator=FirstBatchTimed(iter_factory.build_iter(epoch), first_batch),
                optimizers=optimizers,
                schedulers=[scheduler], scaler=scaler, reporter=sub, summary_writer=None,
                options=options, distributed_option=dist)
        if args.device == "cuda":
            torch.cuda.synchronize()
        record = {"epoch": epoch, "train_seconds": time.perf_counter() - start,
                  "first_batch_seconds": round(first_batch[0] - start, 5) if first_batch else None,
                  "loss_ctc": float(reporter.get_value("train", "loss_ctc"))}
        for key in STEP_TIMES:
            try:
                record[key] = round(float(reporter.get_value("train", key)), 5)
            except KeyError:
                pass
        epochs.append(record)
        # progress: a run cut by a time limit shows how far it got (a cold compile is minutes)
        print(f"  epoch {epoch}/{args.epochs}: {record['train_seconds']:.1f} s, "
              f"loss_ctc {record['loss_ctc']:.2f}", flush=True)
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan")
    # espnet2's sorted sampler cuts len // batch_size batches (15 of 33-34 clips for 508 clips
    # at 32), not ceil(len / batch_size): count the updates of its own sampler
    steps_per_epoch = len(iter_factory.build_iter(1)) // targs.accum_grad
    loader = getattr(iter_factory, "_loader", None)  # persistent workers: epochs prefetched
    result = {"options": extra, "batch_size": targs.batch_size, "accum_grad": targs.accum_grad,
              "steps_per_epoch": steps_per_epoch,
              "prefetched_epochs": getattr(loader, "prefetched_epochs", None),
              "peak_mem_gib": round(peak, 2), "epochs": epochs,
              "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
    if on_timed is not None:
        on_timed(result)
    if profile is not None:  # one more epoch under the profiler, not timed
        profile_epoch(profile, args, lambda iterator, sub: CvasrASRTask.trainer.train_one_epoch(
            model=model, iterator=iterator, optimizers=optimizers, schedulers=[scheduler],
            scaler=scaler, reporter=sub, summary_writer=None, options=options,
            distributed_option=dist), iter_factory, reporter)
    if isinstance(iter_factory, PersistentSequenceIterFactory):
        iter_factory.close()  # its workers, else each costs 5 s at the exit on a GPU (round 24)
    del model, optimizers, scheduler, iter_factory
    return result


def profile_epoch(out: Path, args, train_one_epoch, iter_factory, reporter) -> None:
    """Profile one more epoch: op tables to `out` and its trace to out.epoch.trace.json.gz; then
    a Chrome trace of steps 5-7 of another to out.trace.json.gz."""
    import gzip
    import shutil

    import torch
    from torch.profiler import ProfilerActivity, schedule
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    trace = out.with_suffix(".trace.json")

    def export(prof, trace: Path = trace) -> None:  # a gzipped Chrome trace at trace + .gz
        prof.export_chrome_trace(str(trace))
        with open(trace, "rb") as src, gzip.open(f"{trace}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        trace.unlink()

    def stepping(iterator, prof):
        for item in iterator:
            yield item
            prof.step()

    epoch = args.epochs + 1
    reporter.set_epoch(epoch)
    # the whole epoch for the tables; the schedule's trace keeps 3 steps in the middle
    # (and that epoch's own trace, out.epoch.trace.json.gz: where in an epoch the GPU waits, its
    # start and end included, which the steps' trace cannot show; trace_kernels.py --epoch)
    with torch_profile(activities=activities) as whole, reporter.observe("train") as sub:
        train_one_epoch(iter_factory.build_iter(epoch), sub)
        if args.device == "cuda":
            torch.cuda.synchronize()
    export(whole, out.with_suffix(".epoch.trace.json"))
    key = "cuda_time_total" if args.device == "cuda" else "cpu_time_total"
    out.write_text(whole.key_averages().table(sort_by=key, row_limit=60) + "\n\n" +
                   whole.key_averages().table(sort_by="self_cpu_time_total", row_limit=40))
    reporter.set_epoch(epoch + 1)
    with torch_profile(activities=activities, schedule=schedule(wait=2, warmup=2, active=3),
                       on_trace_ready=export, with_stack=args.profile_stack) as prof, \
            reporter.observe("train") as sub:
        train_one_epoch(stepping(iter_factory.build_iter(epoch + 1), prof), sub)
    if args.device == "cuda":
        reporter.set_epoch(epoch + 2)
        with reporter.observe("train") as sub:
            sync_report(out.with_suffix(".syncs.txt"),
                        lambda steps: train_one_epoch(steps, sub), iter_factory.build_iter(epoch + 2))


#: how torch's sync debug mode words each sync it reports
SYNC_WARNING = "called a synchronizing CUDA operation"


def sync_report(out: Path, train_steps, iterator, steps: int = 8) -> None:
    """Where the training step makes the CPU wait for the GPU: torch's sync debug mode on for
    `steps` steps, each warning's Python call site (outside torch) counted, per step."""
    import collections
    import itertools
    import traceback
    import warnings

    import torch

    sites: collections.Counter[str] = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        if SYNC_WARNING not in str(message):  # other warnings of the step are no syncs
            return
        frames = [f for f in traceback.extract_stack()[:-1]
                  if f"{os.sep}torch{os.sep}" not in f.filename and "warnings" not in f.filename]
        where = " <- ".join(f"{'/'.join(Path(f.filename).parts[-2:])}:{f.lineno} {f.name}"
                            for f in reversed(frames[-4:]))
        sites[f"{str(message).splitlines()[0][:60]} | {where}"] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_steps(itertools.islice(iterator, steps))
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    lines = [f"host-device syncs per training step (over {steps} steps), by call site"]
    lines += [f"{n / steps:7.2f}  {site}" for site, n in sites.most_common()]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:25]), flush=True)


# ---------------------------------------------------------------- report
def summarise(result: dict, audio_per_epoch: float, warmup: int, flops: float,
              peak: float | None, steps_per_epoch: float) -> dict:
    """The timed epochs' rates: over their total time (what the tables and ratios use) and at
    their median epoch (robust to the few slow epochs that move a short run's mean by 5-10%:
    bench/NOTES.md, round 11)."""
    timed = result["epochs"][warmup:] or result["epochs"]
    seconds = sum(e["train_seconds"] for e in timed)
    rate = audio_per_epoch * len(timed) / seconds
    median = float(np.median([e["train_seconds"] for e in timed]))
    result.update(audio_seconds_per_s=round(rate, 1),
                  audio_seconds_per_s_median_epoch=round(audio_per_epoch / median, 1),
                  steps_per_s=round(steps_per_epoch * len(timed) / seconds, 2),
                  fraction_of_peak=round(rate * flops / peak, 4) if peak else None,
                  epochs_timed=len(timed))
    return result


def torch_settings() -> dict[str, object]:
    """The process-wide torch settings a row could leave behind for the rows after it: the
    backends' precision and determinism flags, and dynamo's, inductor's and functorch's configs
    (part of the compile caches' keys). Round 15: on a fresh machine the committed row compiled
    cold after the seed's stack, where without it the same cache spared the compile."""
    import torch
    import torch._dynamo.config
    import torch._functorch.config
    import torch._inductor.config

    flags = {
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cuda.matmul.allow_bf16_reduced_precision_reduction":
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
        "cuda.matmul.allow_fp16_reduced_precision_reduction":
            torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn.benchmark": torch.backends.cudnn.benchmark,
        "cudnn.deterministic": torch.backends.cudnn.deterministic,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "default_dtype": str(torch.get_default_dtype()),
        "grad_enabled": torch.is_grad_enabled(),
    }
    for name, config in (("dynamo", torch._dynamo.config), ("inductor", torch._inductor.config),
                         ("functorch", torch._functorch.config)):
        flags.update({f"{name}.{key}": repr(value)
                      for key, value in config.get_config_copy().items()})
    return flags


def changed_settings(before: dict[str, object], after: dict[str, object]) -> dict[str, list]:
    """The settings of torch_settings() that differ: name -> [before, after]."""
    return {key: [before.get(key), after.get(key)] for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)}


def load_compile_cache(blob: bytes):
    """torch.compiler.load_cache_artifacts for a file saved more than once by one process: every
    save's artifacts restored, not only the last one's.

    Why: main() saves the cache after every row (so that a time-out keeps what was compiled);
    torch 2.11 appends each save's artifacts to one stream, but reads the stream back into a
    dict keyed by artifact type, so of each type only the last save's come back. In round 20 a
    file saved after a try row lost the committed config's graphs, and the next machine compiled
    them cold (301 s; bench/NOTES.md). Here the parts are merged by type before the caches are
    filled (torch's private reader; its public loader where that has moved)."""
    import torch

    try:
        from torch.compiler._cache import CacheArtifactManager, _deserialize_single_cache
        from torch.utils._appending_byte_serializer import AppendingByteSerializer
    except ImportError:
        return torch.compiler.load_cache_artifacts(blob)
    CacheArtifactManager._ensure_cache_artifacts_registered()
    merged: dict[str, list] = {}
    for kind, artifacts in AppendingByteSerializer.to_list(
            blob, deserialize_fn=_deserialize_single_cache):
        merged.setdefault(kind, []).extend(artifacts)
    return CacheArtifactManager.populate_caches(merged)


def save_compile_cache(path: Path) -> None:
    """torch.compile's caches of this process so far, xz-compressed, to `path` (atomically)."""
    import torch

    artifacts = torch.compiler.save_cache_artifacts()
    if artifacts is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(lzma.compress(artifacts[0], preset=1))
    partial.replace(path)
    print(f"compile cache saved to {path} ({len(artifacts[0]) / 2**20:.1f} MiB, "
          f"{path.stat().st_size / 2**20:.1f} MiB xz)", flush=True)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def git_revision() -> str:
    return os.environ.get("CVASR_GIT_REV") or subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--arch", default="xls_r_300m", help="cvasr make-upstream architecture")
    parser.add_argument("--clips", type=int, default=508, help="CV 7.0 Assamese has 508 train clips")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=None,
                        help="DataLoader workers of every row of ours "
                             "(default: as the config and rows say)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only these: seed_random seed_grouped ours_1 ... ours_N")
    parser.add_argument("--profile", type=Path, default=None,
                        help="profile one more epoch of the last of our runs: op tables to this "
                             "file, a Chrome trace of 3 steps next to it")
    parser.add_argument("--profile-row", default=None,
                        help="which of our rows --profile profiles (default: the last)")
    parser.add_argument("--profile-stack", action="store_true",
                        help="the Chrome trace with Python call stacks (where the CPU's time "
                             "goes between kernels; slows the profiled steps)")
    parser.add_argument("--try", dest="tries", action="append", default=[], metavar="LABEL=OPTS",
                        help="an extra row after STEPS: espnet2 options over the committed config "
                             "as the last row runs it (--compile_upstream true first: the config's "
                             "'auto' would run eager here; exploration, the speedup is always "
                             "the committed config's)")
    parser.add_argument("--compile-cache", type=Path, default=None, metavar="FILE",
                        help="torch.compile's caches (torch.compiler.save_cache_artifacts, xz): "
                             "loaded from FILE if it exists, saved to it after every row, so "
                             "that a later run on a fresh machine skips inductor's code generation")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cvasr-bench-throughput"))
    parser.add_argument("--out", type=Path,
                        default=REPO / "bench" / "results" / "train_throughput.json")
    args = parser.parse_args()

    import torch

    from cvasr.text.tokens import read_token_list
    from cvasr.training.stages import resolve_config, schedule_from_data
    from cvasr.models.upstream import ARCHS, write_random_upstream

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: use --device cpu (with --arch tiny) for a smoke run")
    args.work.mkdir(parents=True, exist_ok=True)
    clips = synth_clips(args.clips)
    durations = np.array([len(w) / RATE for _, w, _ in clips])
    audio_per_epoch = float(durations.sum())
    upstream = args.work / f"{args.arch}_random.pt"
    if not upstream.is_file():
        write_random_upstream(args.arch, upstream)
    resolved = args.work / "config.resolved.yaml"
    resolve_config(CONFIG, str(upstream), args.work / "dl", resolved)
    paths = prepare(clips, args.work, resolved)
    print(schedule_from_data(resolved, [paths["stats"] / "train" / "speech_shape",
                                        paths["stats"] / "train" / "text_shape.char"]))
    tokens = read_token_list(paths["tokens"])
    cfg = ARCHS[args.arch]
    flops = flops_per_audio_second(cfg, mean_frames=float(durations.mean()) * 50)
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu"
    peak = peak_flops(gpu) if args.device == "cuda" else None

    if args.compile_cache is not None and args.compile_cache.is_file():
        blob = lzma.decompress(args.compile_cache.read_bytes())
        loaded = load_compile_cache(blob)
        print(f"compile cache {args.compile_cache} loaded: {loaded}", flush=True)
    runs: dict[str, dict] = {}
    failed: dict[str, str] = {}
    meta = {"benchmark": "train_throughput", "gpu": gpu, "device": args.device,
            "torch": torch.__version__, "transformers": _version("transformers"),
            "python": platform.python_version(), "git_revision": git_revision(),
            "config": CONFIG.name, "arch": args.arch, "clips": args.clips,
            "audio_seconds_per_epoch": round(audio_per_epoch, 1),
            "mean_clip_seconds": round(float(durations.mean()), 2),
            "flops_per_audio_second": flops, "peak_flops": peak,
            "warmup_epochs": args.warmup_epochs}

    def save() -> tuple[float | None, float | None]:
        """Write everything measured so far (a run cut short by a time limit keeps its rows);
        the committed row's ratio to the seed's stack, over all timed epochs and at the median."""
        seed_rows = [runs[k] for k in ("seed_random", "seed_grouped") if k in runs]
        final = runs.get(f"ours_{len(STEPS)}")

        def ratio(key: str) -> float | None:  # the committed row over the faster seed run
            if not (seed_rows and final):
                return None
            return round(final[key] / max(row[key] for row in seed_rows), 2)
        speedup, median = ratio("audio_seconds_per_s"), ratio("audio_seconds_per_s_median_epoch")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(
            {**meta, "speedup_vs_seed_stack": speedup,
             "speedup_vs_seed_stack_median_epoch": median,
             "runs": runs, "failed": failed}, indent=2) + "\n")
        return speedup, median

    wanted = (lambda name: args.only is None or name in args.only)
    for name, grouped in (("seed_random", False), ("seed_grouped", True)):
        if wanted(name):
            settings = torch_settings()
            try:
                r = run_seed_stack(clips, tokens, cfg, args, grouped)
            except Exception as err:  # noqa: BLE001 - one failed run must not lose the others
                failed[name] = f"{type(err).__name__}: {err}"
                print(f"{name} FAILED: {failed[name]}", flush=True)
                continue
            runs[name] = summarise(r, audio_per_epoch, args.warmup_epochs, flops, peak,
                                   r["steps_per_epoch"])
            runs[name]["left_changed"] = changed_settings(settings, torch_settings())
            print(f"{name}: {runs[name]['audio_seconds_per_s']} audio-s/s; torch settings it "
                  f"left changed: {runs[name]['left_changed'] or 'none'}", flush=True)
            save()
            gc.collect()
            torch.cuda.empty_cache() if args.device == "cuda" else None
    rows = [(f"ours_{i}", label, extra) for i, (label, extra) in enumerate(STEPS, 1)]
    rows = [row for row in rows if wanted(row[0])]
    for j, spec in enumerate(args.tries, 1):
        label, _, opts = spec.partition("=")
        rows.append((f"try_{j}", label, [*LONG_RUN, *opts.split()]))  # as the last row runs
    profiled = args.profile_row or (rows[-1][0] if rows else None)
    for name, label, extra in rows:
        def timed(r: dict, name=name, label=label) -> None:
            runs[name] = summarise(r, audio_per_epoch, args.warmup_epochs, flops, peak,
                                   r["steps_per_epoch"])
            runs[name]["label"] = label
            print(f"{name} ({label}): {runs[name]['audio_seconds_per_s']} audio-s/s", flush=True)
            save()

        try:
            run_espnet2(paths, resolved, extra, args, on_timed=timed,
                        profile=args.profile if name == profiled else None)
        except Exception as err:  # noqa: BLE001
            failed[name] = f"{type(err).__name__}: {err}"
            print(f"{name} FAILED: {failed[name]}", flush=True)
            save()
        if args.compile_cache is not None:  # after every row: a later time-out keeps it
            save_compile_cache(args.compile_cache)
        if args.device == "cuda":
            # the rows compile the same function (the frontend's contextualise), and dynamo keeps
            # one cache per function: a second compiled row of another mode would add its graphs
            # to the first's and reach its recompile_limit (8), then run eager
            # (bench/results/step_cudagraphs2_406d0cf)
            torch._dynamo.reset()
        gc.collect()
        torch.cuda.empty_cache() if args.device == "cuda" else None

    speedup, median = save()
    print(f"\nXLS-R 300M shape ({args.arch}), random init, {args.clips} clips of CV-like durations "
          f"(mean {durations.mean():.2f} s, {durations.min():.1f}-{durations.max():.1f} s), "
          f"{gpu}, torch {torch.__version__}; first {args.warmup_epochs} epoch(s) not timed")
    print(f"| {'run':<58} | {'audio-s/s':>9} | {'median ep.':>10} | {'steps/s':>7} | "
          f"{'peak GiB':>8} | {'of peak':>7} |")
    print(f"|{'-' * 60}|{'-' * 11}|{'-' * 12}|{'-' * 9}|{'-' * 10}|{'-' * 9}|")
    labels = {"seed_random": "(a) seed: HF Trainer, random batches",
              "seed_grouped": "(a) seed: HF Trainer, group_by_length"}
    for name, r in runs.items():
        frac = f"{100 * r['fraction_of_peak']:6.1f}%" if r["fraction_of_peak"] else "      -"
        print(f"| {labels.get(name, '(b) ' + r.get('label', name)):<58} | "
              f"{r['audio_seconds_per_s']:9.1f} | {r['audio_seconds_per_s_median_epoch']:10.1f} | "
              f"{r['steps_per_s']:7.2f} | "
              f"{r['peak_mem_gib']:8.1f} | {frac} |")
    for name, why in failed.items():
        print(f"{name} failed: {why}")
    if speedup:
        print(f"speedup of the committed config over the faster seed run: {speedup}x "
              f"({median}x at the median epoch)")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
