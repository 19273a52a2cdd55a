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
  started again every epoch (`cvasr.speedups.persistent_loader`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import random
from typing import Any

import numpy as np
import torch
from espnet2.iterators.sequence_iter_factory import SequenceIterFactory
from espnet2.tasks.asr import ASRTask
from espnet2.train.trainer import Trainer, TrainerOptions, autocast_args
from espnet2.utils.build_dataclass import build_dataclass
from espnet2.utils.types import str2bool

from cvasr.models.frontend import Wav2Vec2S3prlFrontend
from cvasr.models.loader import register_with_espnet2
from cvasr.speedups import sync_free_step
from cvasr.speedups.persistent_loader import PersistentSequenceIterFactory
from cvasr.speedups.regional_compile import compile_encoder_layers

RNG_KEY = "cvasr_rng_states"
#: torch.compile modes --compile_mode accepts (no autotuning: compile time is paid every run)
COMPILE_MODES = ("default", "reduce-overhead")


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
    compile_scope: str = "encoder"
    sync_free_step: bool = False


class SafeCheckpointTrainer(Trainer):
    """espnet2's Trainer with atomic checkpoint writes and RNG state in checkpoint.pth."""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--compile_upstream", type=str2bool, default=False,
                            help="torch.compile the s3prl upstream for training: the whole "
                                 "wav2vec2_s3prl encoder as one graph, else its transformer "
                                 "layers (cvasr.speedups.regional_compile)")
        parser.add_argument("--compile_mode", default="default", choices=COMPILE_MODES,
                            help="torch.compile mode for --compile_upstream ('reduce-overhead' "
                                 "replays CUDA graphs, one per batch shape)")
        parser.add_argument("--compile_scope", default="encoder", choices=("encoder", "layers"),
                            help="what --compile_upstream compiles: the wav2vec2_s3prl encoder "
                                 "as one graph, or each transformer layer")

        parser.add_argument("--sync_free_step", type=str2bool, default=False,
                            help="train with a loop that issues each step without waiting for "
                                 "the GPU (cvasr.speedups.sync_free_step); one process only, else "
                                 "espnet2's loop runs")

    @classmethod
    def build_options(cls, args: argparse.Namespace) -> CvasrTrainerOptions:
        return build_dataclass(CvasrTrainerOptions, args)

    @staticmethod
    def prepare_model(model: torch.nn.Module, options: CvasrTrainerOptions) -> None:
        """What the options change on the model before training starts."""
        if not getattr(options, "compile_upstream", False):
            return
        if getattr(options, "ngpu", 0) == 0:
            # inductor's CPU code generation fails on this graph's symbolic lengths (torch 2.11),
            # and on CPU compiling costs more than it saves
            logging.info("compile_upstream: CPU training runs eager")
            return
        mode = getattr(options, "compile_mode", "default")
        frontend = getattr(model, "frontend", None)
        if (getattr(options, "compile_scope", "encoder") == "encoder"
                and isinstance(frontend, Wav2Vec2S3prlFrontend) and frontend.compile_encoder(mode)):
            logging.info(f"compile_upstream: the wav2vec 2.0 encoder is one compiled graph "
                         f"(mode {mode}, dynamic shapes)")
            return
        if mode != "default":
            raise ValueError(f"compile_mode {mode!r} needs frontend: wav2vec2_s3prl on its "
                             "fast path; the per-layer compile only runs mode 'default'")
        compile_encoder_layers(model)

    @classmethod
    def train_one_epoch(cls, model, iterator, optimizers, schedulers, scaler, reporter,
                        summary_writer, options, distributed_option) -> bool:
        """espnet2's loop, or with `sync_free_step` the same step without host syncs."""
        if getattr(options, "sync_free_step", False):
            dtype = autocast_args.get("dtype")
            why = sync_free_step.unsupported_reason(options, distributed_option.distributed, dtype)
            if why is None:
                return sync_free_step.train_one_epoch(
                    model, iterator, optimizers, schedulers, reporter, options,
                    summary_writer=summary_writer, autocast_dtype=dtype)
            logging.warning(f"sync_free_step: espnet2's training loop runs instead, since {why}")
        return super().train_one_epoch(
            model=model, iterator=iterator, optimizers=optimizers, schedulers=schedulers,
            scaler=scaler, reporter=reporter, summary_writer=summary_writer, options=options,
            distributed_option=distributed_option)

    @classmethod
    def run(cls, *args: Any, **kwargs: Any) -> None:
        cls.prepare_model(kwargs["model"], kwargs["trainer_options"])
        original_save = torch.save

        def atomic_save(obj: Any, f: Any, *a: Any, **kw: Any) -> None:
            if not isinstance(f, (str, os.PathLike)):
                return original_save(obj, f, *a, **kw)
            if os.path.basename(f) == "checkpoint.pth" and isinstance(obj, dict):
                obj = {**obj, RNG_KEY: _rng_states()}
            partial = f"{os.fspath(f)}.partial"
            original_save(obj, partial, *a, **kw)
            os.replace(partial, f)

        # Trainer.run saves with the module-level torch.save; route it through atomic_save.
        torch.save = atomic_save
        try:
            super().run(*args, **kwargs)
        finally:
            torch.save = original_save

    @staticmethod
    def resume(checkpoint, model, reporter, optimizers, schedulers, scaler, ngpu: int = 0,
               strict: bool = True) -> None:
        Trainer.resume(checkpoint, model, reporter, optimizers, schedulers, scaler, ngpu, strict)
        states = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
        if RNG_KEY in states:
            _restore_rng_states(states[RNG_KEY])


def register() -> None:
    """Make `frontend: wav2vec2_s3prl`, `encoder: identity` and `model: cvasr_ctc` known to
    espnet2's ASR task (the names and classes are stated once, in cvasr.models.loader)."""
    register_with_espnet2()


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

    @classmethod
    def build_sequence_iter_factory(cls, args: argparse.Namespace, iter_options, mode: str):
        factory = super().build_sequence_iter_factory(args, iter_options, mode)
        if (getattr(args, "persistent_workers", False) and args.num_workers > 0
                and type(factory) is SequenceIterFactory):
            return PersistentSequenceIterFactory.from_factory(factory)
        return factory


def main(cmd: list[str] | None = None) -> None:
    CvasrASRTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
