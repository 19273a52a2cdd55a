"""Stage 4's honest resume: what a re-run may change in a trained experiment, and what it may not.

espnet2 resumes from `checkpoint.pth` with the model, optimizer and scheduler state of the epochs
already trained, so a changed learning rate, schedule, model or token list in the config is not
what the resumed run does (the saved optimizer and scheduler state win: a lower lr stays the old
one), while the experiment's `config.yaml`, rewritten at every start, would claim the new values.
Before espnet2 starts, `plan_resume` therefore compares the options it would run with (parsed by
espnet2's own parser, dumped as espnet2 dumps them) with the experiment's `config.yaml`:

- options that change how the run goes but not what it learns (workers, logging, GPUs, how
  many checkpoints are kept, the speed-ups) may differ: `RESUMABLE`;
- `max_epoch` up extends the run; below the epochs trained there is nothing to train, and the
  experiment stays as it is; a schedule computed from the data (`auto`, which follows
  `max_epoch`) follows it into the extension (the trainer applies the new one on resume);
- any other difference stops with `ResumeRefused`, naming each option with its old and new
  value, and the two ways on: a new experiment, or `--resume false` to start this one over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

#: options whose change a resumed run honours without changing what the epochs so far learned
RESUMABLE = frozenset({
    # bookkeeping and the run itself
    "config", "print_config", "log_level", "dry_run", "output_dir", "resume", "version",
    "max_epoch",  # compared on its own: up extends, below the trained epochs skips
    "patience", "early_stopping_criterion",  # when to stop, from now on
    "keep_nbest_models", "nbest_averaging_interval", "best_model_criterion",  # from the reporter
    "use_matplotlib", "use_tensorboard", "create_graph_in_tensorboard", "use_wandb",
    "wandb_project", "wandb_id", "wandb_entity", "wandb_name", "wandb_model_log_interval",
    "num_att_plot", "detect_anomaly", "log_interval", "valid_every_epochs",
    "checkpoint_every_minutes", "checkpoint_every_epochs", "background_checkpoints",
    "plot_every_epochs", "empty_cache_between_phases", "profile_epoch", "profile_steps",
    "trace_stalls_after",
    # hardware and speed
    "ngpu", "num_workers", "persistent_workers", "prefetch_next_epoch", "dist_backend",
    "dist_init_method", "dist_world_size", "dist_rank", "local_rank", "dist_master_addr",
    "dist_master_port",
    "dist_launcher", "multiprocessing_distributed", "distributed", "unused_parameters",
    "gradient_as_bucket_view", "ddp_comm_hook", "cudnn_enabled", "cudnn_benchmark",
    "cudnn_deterministic", "compile_upstream", "compile_mode", "compile_cpp_wrapper",
    "compile_options", "compile_scope", "sync_free_step", "clip_in_optimizer", "bf16_weight_copies",
    "ddp_host_lengths", "ddp_step_rendezvous",
    "max_cache_size", "valid_max_cache_size", "max_cache_fd",
    # where the data is (its content is followed by the stage records), validation batching
    "train_data_path_and_name_and_type", "valid_data_path_and_name_and_type",
    "train_shape_file", "valid_shape_file", "valid_batch_size", "valid_batch_bins",
    "valid_batch_type", "valid_iterator_type",
})

#: what a refused option is, for the message
_GROUPS = (("optim", "the optimizer"), ("scheduler", "the schedule"), ("token", "the tokens"),
           ("bpemodel", "the tokens"), ("frontend", "the model"), ("specaug", "the model"),
           ("normalize", "the model"), ("model", "the model"), ("preencoder", "the model"),
           ("encoder", "the model"), ("postencoder", "the model"), ("decoder", "the model"),
           ("ctc_conf", "the model"), ("init", "the model"), ("freeze_param", "the model"))


class ResumeRefused(ValueError):
    """The config changed in a way resuming the experiment cannot honour."""


@dataclass(frozen=True)
class Change:
    key: str  # dotted: optim_conf.lr
    old: Any
    new: Any

    def describe(self) -> str:
        if self.key == "token_list" and isinstance(self.old, list) and isinstance(self.new, list):
            return f"token_list ({len(self.old)} tokens -> {len(self.new)}, or others)" \
                if len(self.old) != len(self.new) else "token_list (other tokens)"
        return f"{self.key} {_short(self.old)} -> {_short(self.new)}"


def _short(value: Any, width: int = 40) -> str:
    text = "(unset)" if value is _MISSING else yaml.safe_dump(
        value, default_flow_style=True, width=10**6, allow_unicode=True).strip()
    text = text.removesuffix("...").strip()
    return text if len(text) <= width else text[: width - 3] + "..."


_MISSING = object()


def config_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[Change]:
    """Differences between two espnet2 configs, nested mappings compared key by key, the
    RESUMABLE options left out."""
    changes = []
    for key in sorted(set(old) | set(new), key=str):
        if not prefix and key in RESUMABLE:
            continue
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(Change(f"{prefix}{key}", a, b))
    return changes


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _group(key: str) -> str:
    for prefix, name in _GROUPS:
        if key.startswith(prefix):
            return name
    return "the training"


def parse_task_args(args: Sequence[str]) -> dict[str, Any]:
    """The options espnet2 would run with, as it dumps them in config.yaml (the token list
    read in, as espnet2 writes it)."""
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    from cvasr.training.task import CvasrASRTask

    parser = CvasrASRTask.get_parser()

    def refuse(message: str) -> None:
        raise ResumeRefused(f"the training options are not valid: {message}")

    parser.error = refuse  # type: ignore[method-assign]
    namespace = vars(parser.parse_args(list(args)))
    token_list = namespace.get("token_list")
    if isinstance(token_list, str) and Path(token_list).is_file():
        namespace["token_list"] = [line.rstrip() for line in
                                   Path(token_list).read_text(encoding="utf-8").splitlines()]
    return yaml.safe_load(yaml_no_alias_safe_dump(namespace, indent=4, sort_keys=False))


def trained_epochs(checkpoint: Path) -> int:
    """The epochs `checkpoint.pth` holds (espnet2's reporter state)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    return int(state.get("reporter", {}).get("epoch", 0))


@dataclass
class ResumePlan:
    """What stage 4 does with the experiment: `run` espnet2 (with `extra_args` appended) or not,
    and the lines that say so."""

    run: bool = True
    extra_args: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def plan_resume(exp_dir: Path, task_args: Sequence[str],
                derived: Sequence[str] = ()) -> ResumePlan:
    """Compare the options espnet2 would run with (`task_args`) with the experiment's. Options
    in `derived` (dotted keys) were computed from the data and max_epoch at this stage 4: they
    may differ, and a line says how."""
    exp_dir = Path(exp_dir)
    checkpoint = exp_dir / "checkpoint.pth"
    new = parse_task_args(task_args)
    if not checkpoint.is_file():
        return ResumePlan(lines=[f"training {exp_dir} from the start "
                                 f"({_epochs(int(new['max_epoch']))})"])
    done = trained_epochs(checkpoint)
    if not new.get("resume", True):
        return ResumePlan(lines=[f"starting {exp_dir} over (--resume false): the {_epochs(done)} "
                                 "trained before are replaced"])
    config = exp_dir / "config.yaml"
    old = yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else None
    followed = []
    if isinstance(old, dict):
        changes = config_changes(old, new)
        followed = [c for c in changes if c.key in derived]
        changes = [c for c in changes if c.key not in derived]
        if changes:
            groups = list(dict.fromkeys(_group(c.key) for c in changes))
            raise ResumeRefused(
                f"{exp_dir} has {_epochs(done)} trained with another config, and resuming "
                f"cannot honour the change ({', '.join(groups)}): "
                + "; ".join(c.describe() for c in changes)
                + ". Train a new experiment (run.sh --asr_tag NAME, or another --exp-dir), or "
                  "start this one over (run.sh --train_args \"--resume false\", or -- --resume "
                  "false)")
    max_epoch = int(new["max_epoch"])
    if max_epoch < done:
        lines = [f"{exp_dir} has {_epochs(done)} trained, more than max_epoch {max_epoch}: "
                 f"nothing to train; the model stays the {done}-epoch one (for a {max_epoch}-epoch "
                 "model: a new --asr_tag, or --train_args \"--resume false\")"]
        if any(exp_dir.glob("*.ave.pth")):
            return ResumePlan(run=False, lines=lines)
        # the run that trained them stopped before averaging the best epochs: let espnet2
        # finish that, with the epochs it has
        return ResumePlan(extra_args=["--max_epoch", str(done)],
                          lines=lines + ["averaging its best epochs, which the run that trained "
                                         "them did not get to"])
    if max_epoch == done:
        return ResumePlan(lines=[f"{exp_dir} has all {_epochs(done)} trained"])
    lines = [f"resuming {exp_dir} at epoch {done + 1} of {max_epoch}"]
    if followed:
        lines.append("the schedule computed from the data follows the new end of training: "
                     + "; ".join(c.describe() for c in followed))
    return ResumePlan(lines=lines)
