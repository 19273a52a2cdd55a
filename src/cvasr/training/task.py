"""The thin espnet2 ASR task extension the recipe trains with (`python -m cvasr.training.task`).

espnet2 does the training; this module adds only what it lacks for this recipe:

- `Wav2Vec2S3prlFrontend` (`frontend: wav2vec2_s3prl`, in `cvasr.models.frontend`): espnet2's s3prl
  frontend without the host syncs that made XLS-R training CPU-bound.
- `IdentityEncoder` (`encoder: identity`) and `CTCWerASRModel` (`model: cvasr_ctc`), in
  `cvasr.models.ctc_model`.
- `SafeCheckpointTrainer`: espnet2 writes `checkpoint.pth` in place, so a kill during the write
  leaves a file that cannot be resumed from, and it does not save RNG states. Here every
  checkpoint is written to a temporary name and renamed, and the RNG states of Python, NumPy
  and torch (CPU and CUDA) are saved with it and restored on `--resume true`. It also takes
  `compile_upstream: true` (with `compile_mode`), which compiles the upstream for training: the
  whole encoder of `wav2vec2_s3prl` as one graph, else the transformer layers
  (`cvasr.speedups.regional_compile`); decoding builds the model uncompiled.
- `persistent_workers: true`: the DataLoader workers live for the whole run instead of being
  started again every epoch, and on GPU (`prefetch_next_epoch`) load the next epoch's first
  batches before it starts (`cvasr.speedups.persistent_loader`).
- images/*.png only for the curves that carry data (`cvasr.training.plots`).
- `trace_stalls_after`: every thread's stack when the time between two epochs passes that many
  seconds, and from the training's end until the process exits (`cvasr.training.stalls`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from espnet2.iterators.sequence_iter_factory import SequenceIterFactory
from espnet2.schedulers.abs_scheduler import AbsValEpochStepScheduler
from espnet2.schedulers.piecewise_linear_warmup_lr import PiecewiseLinearWarmupLR
from espnet2.tasks.asr import ASRTask
from espnet2.train import trainer as trainer_module
from espnet2.train.reporter import Reporter
from espnet2.train.trainer import Trainer, TrainerOptions, autocast_args
from espnet2.utils.build_dataclass import build_dataclass
from espnet2.utils.nested_dict_action import NestedDictAction
from espnet2.utils.types import str2bool

from cvasr.models.espnet_choices import register
from cvasr.models.frontend import Wav2Vec2S3prlFrontend, inductor_options
from cvasr.quiet import drop_espnet2_forward_deprecations
from cvasr.speedups import sync_free_step
from cvasr.speedups.sync_free_step import DEFAULT_DDP_HOST_LENGTHS, DEFAULT_DDP_STEP_RENDEZVOUS
from cvasr.speedups.persistent_loader import PersistentSequenceIterFactory
from cvasr.speedups.float8_ffn import convert_ffn_to_float8
from cvasr.speedups.regional_compile import compile_encoder_layers
from cvasr.training.checkpoints import CHECKPOINT, EPOCH_FILE, EpochWriter
from cvasr.training.launch import close_process_group, fork_data_workers, set_nccl_defaults
from cvasr.training.plots import plot_curves
from cvasr.training.profiling import profile_path, profiled
from cvasr.training.stalls import StallTracer, traces_path
from cvasr.training.validation import ranking_validated_epochs, validates
from cvasr.training.writer_process import atomic_save

RNG_KEY = "cvasr_rng_states"
#: torch.compile modes --compile_mode accepts. The max-autotune ones time inductor's own GEMM
#: templates against cuBLAS and tune the fused kernels: minutes more of the cold compile, paid
#: once where the experiment's compile cache keeps the result (cvasr.training.stages)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@dataclasses.dataclass
class CvasrTrainerOptions(TrainerOptions):
    compile_upstream: bool = False
    compile_mode: str = "default"
    compile_cpp_wrapper: bool = False
    compile_options: dict = dataclasses.field(default_factory=dict)
    compile_scope: str = "encoder"
    float8_ffn: bool = False
    sync_free_step: bool = False
    clip_in_optimizer: bool = False
    bf16_weight_copies: bool = False
    ddp_host_lengths: bool = DEFAULT_DDP_HOST_LENGTHS
    ddp_step_rendezvous: str = DEFAULT_DDP_STEP_RENDEZVOUS
    valid_every_epochs: int = 1
    checkpoint_every_minutes: float = 5.0
    checkpoint_every_epochs: int = 0
    background_checkpoints: bool = True
    plot_every_epochs: int = 0
    empty_cache_between_phases: bool = True
    profile_epoch: int = 0
    profile_steps: int = 10
    trace_stalls_after: float = 0.0


def str2bool_or_auto(value: str) -> bool | str:
    """espnet2's str2bool, or "auto" (an option stage 4 settles from the data)."""
    return "auto" if str(value).lower() == "auto" else str2bool(value)


class SafeCheckpointTrainer(Trainer):
    """espnet2's Trainer with atomic checkpoint writes and RNG state in checkpoint.pth."""

    #: set for a run with `trace_stalls_after` (espnet2 calls the epoch methods as classmethods)
    _stall_tracer: StallTracer | None = None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        defaults = CvasrTrainerOptions  # each option's default, stated once: in the dataclass
        parser.add_argument("--compile_upstream", type=str2bool_or_auto,
                            default=defaults.compile_upstream,
                            help="torch.compile the s3prl upstream for training: the whole "
                                 "wav2vec2_s3prl encoder as one graph, else its transformer "
                                 "layers (cvasr.speedups.regional_compile); auto: stage 4 "
                                 "decides from the planned steps and the compile cache "
                                 "(cvasr.training.stages.compile_from_data)")
        parser.add_argument("--compile_mode", default=defaults.compile_mode, choices=COMPILE_MODES,
                            help="torch.compile mode for --compile_upstream ('reduce-overhead' "
                                 "replays CUDA graphs, one per batch shape; 'max-autotune' does "
                                 "too, with autotuned kernels)")
        parser.add_argument("--compile_cpp_wrapper", type=str2bool,
                            default=defaults.compile_cpp_wrapper,
                            help="inductor's C++ wrapper for --compile_upstream's graph: its "
                                 "kernels launched from C++, not Python (less CPU time a step; "
                                 "a longer first compile)")
        parser.add_argument("--compile_options", action=NestedDictAction, default={},
                            help="inductor config entries for --compile_upstream's graph, over "
                                 "--compile_mode's own (torch._inductor.config names, e.g. "
                                 "triton.mix_order_reduction_split_size=64; repeat the option "
                                 "for more)")
        parser.add_argument("--compile_scope", default=defaults.compile_scope,
                            choices=("encoder", "encoder_shared_layers", "layers"),
                            help="what --compile_upstream compiles: the wav2vec2_s3prl encoder "
                                 "as one graph; the same with its layers generated once for "
                                 "all (hierarchical compilation: a shorter compile); or each "
                                 "transformer layer")
        parser.add_argument("--float8_ffn", type=str2bool, default=defaults.float8_ffn,
                            help="the wav2vec2 transformer's feed-forward GEMMs in float8 "
                                 "(torchao, tensorwise scaling; cvasr.speedups.float8_ffn): "
                                 "GPUs of compute capability 8.9 and up, with compile_upstream "
                                 "(slower than bf16 for XLS-R 300M on an H200: bench/NOTES.md)")
        parser.add_argument("--profile_epoch", type=int, default=defaults.profile_epoch,
                            help="profile --profile_steps training steps of this epoch in every "
                                 "process, into <exp>/profile/ (cvasr.training.profiling); 0: no")
        parser.add_argument("--profile_steps", type=int, default=defaults.profile_steps)
        parser.add_argument("--trace_stalls_after", type=float,
                            default=defaults.trace_stalls_after,
                            help="write every thread's Python stack to <exp>/stall_traces.txt "
                                 "when the time from an epoch's end to the next epoch's start "
                                 "passes this many seconds, and once a second from the "
                                 "training's end until the process exits "
                                 "(cvasr.training.stalls); 0: off")
        parser.add_argument("--valid_every_epochs", type=int, default=defaults.valid_every_epochs,
                            help="validate after every this many epochs and after the last "
                                 "(espnet2: 1); the n best models and their average are "
                                 "chosen among the validated epochs (cvasr.training.validation)")

        parser.add_argument("--sync_free_step", type=str2bool, default=defaults.sync_free_step,
                            help="train with a loop that issues each step without waiting for "
                                 "the GPU (cvasr.speedups.sync_free_step); one GPU a process "
                                 "(DDP included), else espnet2's loop runs")
        parser.add_argument("--clip_in_optimizer", type=str2bool,
                            default=defaults.clip_in_optimizer,
                            help="with --sync_free_step and fused optimizers: the gradient "
                                 "clipping's multiply done by the optimizer's own kernel "
                                 "(its grad_scale), not as a pass of its own over the gradients "
                                 "(cvasr.speedups.sync_free_step.clip_scale)")
        parser.add_argument("--bf16_weight_copies", type=str2bool,
                            default=defaults.bf16_weight_copies,
                            help="with --sync_free_step, bf16 autocast, Adam and one GPU: the "
                                 "linear layers trained through bf16 copies of their weights "
                                 "that the optimizer's kernel writes, so no step casts them "
                                 "(cvasr.speedups.bf16_weight_copies)")
        parser.add_argument("--ddp_host_lengths", type=str2bool, default=defaults.ddp_host_lengths,
                            help="with --sync_free_step under DDP, a model that takes its "
                                 "lengths on the host gets them there (false: DDP copies them "
                                 "to the GPU, as before; for a same-run comparison)")
        parser.add_argument("--ddp_step_rendezvous", default=defaults.ddp_step_rendezvous,
                            choices=sync_free_step.DDP_STEP_RENDEZVOUS,
                            help="with --sync_free_step under DDP, what the ranks exchange "
                                 "between a step's forward and backward: espnet2's statistics "
                                 "and batch weight; the weight only, the statistics gathered once "
                                 "a log interval (the same figures); or nothing, the gradients "
                                 "divided by the weight after the backward")
        # between epochs (cvasr.training.checkpoints)
        parser.add_argument("--checkpoint_every_minutes", type=float,
                            default=defaults.checkpoint_every_minutes,
                            help="write checkpoint.pth (what --resume continues from) when this "
                                 "many minutes of training have passed since the last one, and "
                                 "after the last epoch; 0 with --checkpoint_every_epochs 0: "
                                 "every epoch")
        parser.add_argument("--checkpoint_every_epochs", type=int,
                            default=defaults.checkpoint_every_epochs,
                            help="also write checkpoint.pth every this many epochs (0: off)")
        parser.add_argument("--background_checkpoints", type=str2bool,
                            default=defaults.background_checkpoints,
                            help="write checkpoints from a device copy while training goes "
                                 "on: a background thread hands the copy to a writer process "
                                 "(cvasr.training.writer_process)")
        parser.add_argument("--plot_every_epochs", type=int, default=defaults.plot_every_epochs,
                            help="draw the training curves (images/*.png) every this many "
                                 "epochs; 0: once, at the end")
        parser.add_argument("--empty_cache_between_phases", type=str2bool,
                            default=defaults.empty_cache_between_phases,
                            help="espnet2 empties the CUDA cache before training, validation and "
                                 "after them every epoch; false keeps the cached blocks, which "
                                 "the next epoch would allocate again")

    @classmethod
    def build_options(cls, args: argparse.Namespace) -> CvasrTrainerOptions:
        return build_dataclass(CvasrTrainerOptions, args)

    @staticmethod
    def prepare_model(model: torch.nn.Module, options: CvasrTrainerOptions) -> None:
        """What the options change on the model before training starts."""
        inductor = inductor_options(getattr(options, "compile_options", None))  # refused early
        if getattr(options, "float8_ffn", False):
            device = next(model.parameters()).device
            count = convert_ffn_to_float8(model, device)
            logging.info(f"float8_ffn: {count} feed-forward layers run their GEMMs in float8"
                         + ("" if options.compile_upstream is True else
                            " (without compile_upstream its casts run unfused: slower)"))
        if getattr(options, "compile_upstream", False) == "auto":
            logging.info("compile_upstream: auto is settled by stage 4 (cvasr train); started "
                         "without it, the upstream runs eager")
            return
        if not getattr(options, "compile_upstream", False):
            return
        if getattr(options, "ngpu", 0) == 0:
            # inductor's CPU code generation fails on this graph's symbolic lengths (torch 2.11),
            # and on CPU compiling costs more than it saves
            logging.info("compile_upstream: CPU training runs eager")
            return
        mode = getattr(options, "compile_mode", "default")
        cpp_wrapper = getattr(options, "compile_cpp_wrapper", False)
        frontend = getattr(model, "frontend", None)
        scope = getattr(options, "compile_scope", "encoder")
        if (scope in ("encoder", "encoder_shared_layers")
                and isinstance(frontend, Wav2Vec2S3prlFrontend)
                and frontend.compile_encoder(mode, shared_layers=scope == "encoder_shared_layers",
                                             cpp_wrapper=cpp_wrapper, options=inductor)):
            logging.info(f"compile_upstream: the wav2vec 2.0 encoder is one compiled graph "
                         f"(mode {mode}, dynamic shapes"
                         + (", its layers generated once" if scope != "encoder" else "")
                         + (", C++ wrapper" if cpp_wrapper else "")
                         + (f", inductor options {inductor}" if inductor else "")
                         + "); validation runs it eager")
            return
        if mode != "default" or cpp_wrapper or inductor:
            raise ValueError(f"compile_mode {mode!r}, compile_cpp_wrapper and compile_options "
                             "need frontend: wav2vec2_s3prl on its fast path; the per-layer "
                             "compile only runs mode 'default' without the C++ wrapper or "
                             "inductor options")
        compile_encoder_layers(model)

    @classmethod
    def train_one_epoch(cls, model, iterator, optimizers, schedulers, scaler, reporter,
                        summary_writer, options, distributed_option) -> bool:
        """espnet2's loop, or with `sync_free_step` the same step without host syncs (a few of
        its steps profiled in `profile_epoch`)."""
        if cls._stall_tracer is not None:
            cls._stall_tracer.epoch_starts()
        if getattr(options, "profile_epoch", 0) and reporter.epoch == options.profile_epoch:
            iterator = profiled(iterator, profile_path(options.output_dir, reporter.epoch),
                                options.profile_steps, cuda=options.ngpu > 0)
        if getattr(options, "sync_free_step", False):
            dtype = autocast_args.get("dtype")
            why = sync_free_step.unsupported_reason(options, distributed_option.distributed, dtype)
            if why is None:
                return sync_free_step.train_one_epoch(
                    model, iterator, optimizers, schedulers, reporter, options,
                    summary_writer=summary_writer, autocast_dtype=dtype,
                    distributed=distributed_option.distributed)
            logging.warning(f"sync_free_step: espnet2's training loop runs instead, since {why}")
        return super().train_one_epoch(
            model=model, iterator=iterator, optimizers=optimizers, schedulers=schedulers,
            scaler=scaler, reporter=reporter, summary_writer=summary_writer, options=options,
            distributed_option=distributed_option)

    @classmethod
    def validate_one_epoch(cls, model, iterator, reporter, options, distributed_option) -> None:
        """espnet2's validation, on the epochs `valid_every_epochs` picks (all by default)."""
        if validates(reporter.epoch, getattr(options, "valid_every_epochs", 1), options.max_epoch):
            super().validate_one_epoch(model=model, iterator=iterator, reporter=reporter,
                                       options=options, distributed_option=distributed_option)
        if cls._stall_tracer is not None:  # what espnet2 does next ends the epoch
            cls._stall_tracer.epoch_ended(reporter.epoch)

    @classmethod
    def run(cls, *args: Any, **kwargs: Any) -> None:
        """espnet2's run, with its between-epoch work routed through an EpochWriter: its
        torch.save calls (checkpoint, epoch models, averages), its plots and its cache emptying
        are intercepted for the run's duration (cvasr.training.checkpoints says why)."""
        options = kwargs["trainer_options"]
        if getattr(options, "valid_every_epochs", 1) > 1 and any(
                isinstance(s, AbsValEpochStepScheduler) for s in kwargs.get("schedulers", [])):
            raise ValueError("valid_every_epochs > 1 leaves epochs without the validation value "
                             "the scheduler steps on (val_scheduler_criterion): use 1")
        cls.prepare_model(kwargs["model"], options)
        keep = options.keep_nbest_models
        writer = EpochWriter(
            options.output_dir, options.max_epoch, options.best_model_criterion,
            max(keep) if isinstance(keep, (list, tuple)) and keep else int(keep or 1),
            every_minutes=getattr(options, "checkpoint_every_minutes", 0.0),
            every_epochs=getattr(options, "checkpoint_every_epochs", 0),
            # espnet2 saves on rank 0 only: the other ranks need no writer process
            background=(getattr(options, "background_checkpoints", False)
                        and getattr(kwargs.get("distributed_option"), "dist_rank", 0) in (0, None)),
            save=torch.save, rng_states=_rng_states, rng_key=RNG_KEY)
        if getattr(options, "resume", False):
            writer.restore()
        after = getattr(options, "trace_stalls_after", 0.0)
        if after > 0:
            cls._stall_tracer = StallTracer(traces_path(options.output_dir), after,
                                            last_epoch=options.max_epoch)
        plot_every = getattr(options, "plot_every_epochs", 1)
        originals = {"save": torch.save, "average": trainer_module.average_nbest_models,
                     "plot": Reporter.matplotlib_plot, "empty_cache": torch.cuda.empty_cache}
        plotted: dict[str, Any] = {}

        def routed_save(obj: Any, f: Any, *a: Any, **kw: Any) -> None:
            if not isinstance(f, (str, os.PathLike)):
                return originals["save"](obj, f, *a, **kw)
            name = os.path.basename(os.fspath(f))
            epoch_file = EPOCH_FILE.fullmatch(name)
            if name == CHECKPOINT and isinstance(obj, dict):
                writer.on_checkpoint(obj)
            elif epoch_file and isinstance(obj, dict):
                writer.on_epoch_model(int(epoch_file.group(1)), obj)
            else:  # the averaged models, written once at the end
                atomic_save(lambda o, p: originals["save"](o, p, *a, **kw), obj, Path(f))

        def average_after_flush(*a: Any, **kw: Any) -> None:
            # what stage 4 does after its last epoch, timed in train.log (round 24 on an H200:
            # 10-10.5 s to disk, 5.2-5.4 s averaging; bench/NOTES.md)
            start = time.perf_counter()
            writer.flush()  # the epoch models it averages, on disk and complete
            flushed = time.perf_counter()
            originals["average"](*a, **kw)
            logging.info(f"after the last epoch: epoch models on disk in {flushed - start:.1f} s, "
                         f"averaged in {time.perf_counter() - flushed:.1f} s")

        def plot_now_and_then(reporter: Reporter, output_dir: Any) -> None:
            plotted.update(reporter=reporter, output_dir=output_dir)
            if plot_every > 0 and reporter.get_epoch() % plot_every == 0:
                plot_curves(reporter, output_dir)  # espnet2's figures, only those with data
                plotted["epoch"] = reporter.get_epoch()

        # espnet2's Trainer.run calls these through module and class attributes
        torch.save = routed_save
        trainer_module.average_nbest_models = average_after_flush
        Reporter.matplotlib_plot = plot_now_and_then
        if not getattr(options, "empty_cache_between_phases", True):
            torch.cuda.empty_cache = lambda: None
        try:
            with ranking_validated_epochs():
                super().run(*args, **kwargs)
            reporter = plotted.get("reporter")
            if reporter is not None and plotted.get("epoch") != reporter.get_epoch():
                start = time.perf_counter()
                plot_curves(reporter, Path(plotted["output_dir"]))
                logging.info(f"training curves drawn in {time.perf_counter() - start:.1f} s")
        finally:
            torch.save = originals["save"]
            trainer_module.average_nbest_models = originals["average"]
            Reporter.matplotlib_plot = originals["plot"]
            torch.cuda.empty_cache = originals["empty_cache"]
            for factory in (kwargs.get("train_iter_factory"), kwargs.get("valid_iter_factory")):
                if isinstance(factory, PersistentSequenceIterFactory):
                    factory.close()  # else the exit waits for its workers (see there)
            if cls._stall_tracer is not None:  # on until the process exits
                cls._stall_tracer.training_ended()
                cls._stall_tracer = None
            start = time.perf_counter()
            writer.close()
            logging.info(f"checkpoint writes done and the writer stopped in "
                         f"{time.perf_counter() - start:.1f} s")

    @staticmethod
    def resume(checkpoint, model, reporter, optimizers, schedulers, scaler, ngpu: int = 0,
               strict: bool = True) -> None:
        """espnet2's resume, then the RNG states; a piecewise-linear schedule keeps the steps
        and rates of this run's config (the checkpoint's would win otherwise): stage 4 refuses
        any change of them but one computed from the data for a longer run
        (cvasr.training.resume), which must then take effect."""
        planned = [(s.warmup_steps_list, s.warmup_lr_list)
                   if isinstance(s, PiecewiseLinearWarmupLR) else None for s in schedulers]
        Trainer.resume(checkpoint, model, reporter, optimizers, schedulers, scaler, ngpu, strict)
        for optimizer, scheduler, lists in zip(optimizers, schedulers, planned):
            if lists is None or lists == (scheduler.warmup_steps_list, scheduler.warmup_lr_list):
                continue
            scheduler.warmup_steps_list, scheduler.warmup_lr_list = lists
            # the optimizer holds the rate the old schedule set for the next step: the new one's
            lrs = scheduler.get_lr()
            for group, lr in zip(optimizer.param_groups, lrs):
                group["lr"] = float(lr)
            scheduler._last_lr = [float(lr) for lr in lrs]
        states = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
        if RNG_KEY in states:
            _restore_rng_states(states[RNG_KEY])


# At import, not only in main(): DDP workers are spawned processes that import this module
# to unpickle CvasrASRTask.main_worker, and they build the model from the same choices.
register()


class CvasrASRTask(ASRTask):
    trainer = SafeCheckpointTrainer

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_task_arguments(parser)
        parser.add_argument("--persistent_workers", type=str2bool, default=False,
                            help="keep the DataLoader workers from one epoch to the next instead "
                                 "of starting new ones every epoch (cvasr.speedups.persistent_loader)")
        parser.add_argument("--prefetch_next_epoch", type=str2bool, default=True,
                            help="with persistent_workers, training on GPU: load the next "
                                 "epoch's first batches during the epoch before, so that it does "
                                 "not start by waiting for them (the same batches and worker "
                                 "seeds; cvasr.speedups.persistent_loader)")

    @classmethod
    def main_worker(cls, args: argparse.Namespace) -> None:
        fork_data_workers()  # where espnet2's launcher spawned this process (see there)
        drop_espnet2_forward_deprecations()  # each process of a DDP run: filters are not inherited
        super().main_worker(args)
        close_process_group()  # before the interpreter's exit (see there)

    @classmethod
    def build_sequence_iter_factory(cls, args: argparse.Namespace, iter_options, mode: str):
        factory = super().build_sequence_iter_factory(args, iter_options, mode)
        if (getattr(args, "persistent_workers", False) and args.num_workers > 0
                and type(factory) is SequenceIterFactory):
            return PersistentSequenceIterFactory.from_factory(
                factory, prefetch_next_epoch=prefetches_next_epoch(args, mode))
        return factory


def prefetches_next_epoch(args: argparse.Namespace, mode: str) -> bool:
    """Whether the persistent iterator of `mode` loads the next epoch's first batches ahead:
    training on GPU with `prefetch_next_epoch`. On CPU the training step draws from the RNG
    the next epoch's worker seed comes from (dropout), so the seed cannot be known ahead."""
    return (mode == "train" and bool(getattr(args, "prefetch_next_epoch", True))
            and getattr(args, "ngpu", 0) > 0)


def main(cmd: list[str] | None = None) -> None:
    set_nccl_defaults(os.environ)  # before espnet2's own defaults (launch.NCCL_DEFAULTS)
    CvasrASRTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
