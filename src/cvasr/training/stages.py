"""Stages 3-4: espnet2 shape statistics and training, driven by a YAML config.

This module only assembles espnet2 command lines (run as `python -m cvasr.training.task`, espnet2's
ASR task with the recipe's small extensions) and checks what espnet2 would otherwise report late
or obscurely: unknown config keys, a missing upstream checkpoint, a token list that does not
match the model being resumed. Each such problem is one `ConfigError` line naming the file.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import yaml

from cvasr.console import child_env, say
from cvasr.training.launch import Launch, processes
from cvasr.text.tokens import read_token_list
from cvasr.yaml_config import read_mapping

#: s3prl upstream names that stand for "the wav2vec 2.0 model from stage 0".
WAV2VEC2_PLACEHOLDERS = ("xls_r_300m", "wav2vec2_custom")
#: espnet2 frontends whose frontend_conf names an s3prl upstream.
S3PRL_FRONTENDS = ("s3prl", "wav2vec2_s3prl")
SPEECH_TYPE = "kaldi_ark"  # stage 2 dumps into Kaldi arks


class ConfigError(Exception):
    """A config, upstream or token list problem, said in one line."""


def _task_option_names() -> set[str]:
    from cvasr.training.task import CvasrASRTask, register

    register()
    parser = CvasrASRTask.get_parser()
    return {action.dest for action in parser._actions}


def resolve_config(config: Path, upstream: str, download_dir: Path, out: Path) -> dict[str, Any]:
    """Check `config` against espnet2's options, fill in the upstream, write it to `out`.

    `upstream` is stage 0's record: a checkpoint path, or `s3prl:<name>` for s3prl's own.
    """
    config = Path(config)
    conf = read_mapping(config, "training config", ConfigError)
    known = _task_option_names()
    for key in conf:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{config}: unknown key '{key}'{hint}")
    _check_values(config, conf)
    if conf.get("frontend") in S3PRL_FRONTENDS:
        inner = conf.setdefault("frontend_conf", {}).setdefault("frontend_conf", {})
        if inner.get("upstream") in WAV2VEC2_PLACEHOLDERS:
            if upstream.startswith("s3prl:"):
                inner.update(upstream=upstream.split(":", 1)[1])
                inner.pop("path_or_url", None)
                conf["frontend_conf"]["download_dir"] = str(download_dir)
            else:
                if not Path(upstream).is_file():
                    raise ConfigError(f"upstream checkpoint {upstream} (recorded by stage 0) does "
                                      "not exist: run stage 0 again or pass --upstream_ckpt")
                inner.update(upstream="wav2vec2_custom", path_or_url=str(Path(upstream).resolve()))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(conf, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return conf


def _check_values(config: Path, conf: dict[str, Any]) -> None:
    """Each value against the type its option or class declares (cvasr.training.config_check)."""
    from cvasr.training.config_check import task_config_problems

    problems = task_config_problems(conf)
    if problems:
        raise ConfigError(f"{config}: " + "; ".join(problems))


def _token_type(token_list: Path) -> str:
    """Stage 3 writes bpe.model beside a BPE token list; without one the list is characters."""
    return "bpe" if (Path(token_list).parent / "bpe.model").is_file() else "char"


def _token_args(token_list: Path) -> list[str]:
    bpemodel = Path(token_list).parent / "bpe.model"
    token_type = _token_type(token_list)
    return ["--token_type", token_type, "--token_list", str(token_list),
            "--bpemodel", str(bpemodel) if token_type == "bpe" else "none",
            "--non_linguistic_symbols", "none", "--cleaner", "none", "--g2p", "none",
            "--use_preprocessor", "true"]


def _data_args(dump_dir: Path, split: str, role: str) -> list[str]:
    d = Path(dump_dir) / split
    return [f"--{role}_data_path_and_name_and_type", f"{d / 'wav.scp'},speech,{SPEECH_TYPE}",
            f"--{role}_data_path_and_name_and_type", f"{d / 'text'},text,text"]


def _task_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of an espnet2 process: ours for children, unbuffered, `env` on top."""
    return {**child_env(), "PYTHONUNBUFFERED": "1", **env}


def _log_command(out: Any, cmd: Sequence[str]) -> None:
    """The command as the first line of its output in a log."""
    out.write("# " + " ".join(cmd) + "\n")
    out.flush()


def _run(cmd: Sequence[str], log: Path, on_line: Callable[[str], None] | None = None,
         env: dict[str, str] | None = None) -> None:
    """Run `cmd` (espnet2's task, as cvasr.training.launch starts it), its output both on our
    stdout (the stage log under run.sh) and appended to `log`; `on_line` sees every line
    (stage 4's console lines); `env` on top of the environment."""
    log.parent.mkdir(parents=True, exist_ok=True)
    last = ""
    with open(log, "a", encoding="utf-8") as out:
        _log_command(out, cmd)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, env=_task_env(env or {}))
        assert proc.stdout is not None
        for line in proc.stdout:  # line by line, so a killed run leaves its log complete
            sys.stdout.write(line)
            sys.stdout.flush()
            out.write(line)
            out.flush()
            last = line.strip() or last
            if on_line is not None:
                on_line(line)
        status = proc.wait()
    if status != 0:
        raise RuntimeError(f"espnet2 exited with status {status} ({last}); see {log}")


def collect_stats(dump_dir: Path, token_list: Path, config: Path, out_dir: Path,
                  train_split: str = "train", valid_split: str = "dev") -> None:
    """espnet2's collect-stats (shapes only: the big frontend is not run over the data)."""
    out_dir = Path(out_dir)
    (task,) = processes(
        [*_token_args(token_list), "--collect_stats", "true", "--config", str(config),
         *_data_args(dump_dir, train_split, "train"), *_data_args(dump_dir, valid_split, "valid"),
         "--train_shape_file", str(Path(dump_dir) / train_split / "wav.scp"),
         "--valid_shape_file", str(Path(dump_dir) / valid_split / "wav.scp"),
         "--output_dir", str(out_dir), "--num_workers", "0"], 0, Launch(), out_dir)
    _run(task.cmd, log=out_dir / "collect_stats.log")
    vocab = len(read_token_list(token_list))
    token_type = _token_type(token_list)
    for role in ("train", "valid"):
        shapes = (out_dir / role / "text_shape").read_text().splitlines()
        (out_dir / role / f"text_shape.{token_type}").write_text(
            "".join(f"{line},{vocab}\n" for line in shapes))


def check_resume_compatible(exp_dir: Path, token_list: Path) -> None:
    """Refuse to resume a run whose CTC layer was built for another token list."""
    checkpoint = Path(exp_dir) / "checkpoint.pth"
    if not checkpoint.is_file():
        return
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    weight = state.get("model", {}).get("ctc.ctc_lo.weight")
    vocab = len(read_token_list(token_list))
    if weight is not None and weight.shape[0] != vocab:
        raise ConfigError(f"token list {token_list} has {vocab} tokens but the model in "
                          f"{checkpoint} was trained with {weight.shape[0]}: use the token list "
                          "of that run, or another experiment dir")


#: the value a config gives a scheduler step to have stage 4 compute it from the data
SCHEDULE_FROM_DATA = "auto"
#: `compile_upstream: auto`: stage 4 decides (compile_from_data)
COMPILE_FROM_DATA = "auto"
#: torch.compile's caches under the experiment dir (compile_cache_env)
COMPILE_CACHE = "compile_cache"
#: the options schedule_from_data computes (they follow max_epoch when a run is extended)
SCHEDULE_KEYS = ("scheduler_conf.warmup_steps_list", "scheduler_conf.warmup_lr_list")


def optimizer_steps(config: Path, shape_files: Sequence[Path], extra_args: Sequence[str] = ()
                    ) -> tuple[int, int, int]:
    """(optimizer steps an epoch, max_epoch, batches an epoch) as espnet2 will train with
    `config` and `extra_args`: its own option parser and batch sampler count the batches, so
    every batch type, --num_iters_per_epoch and --accum_grad count as in training."""
    return _steps_of(_training_options(config, extra_args), shape_files)


def _steps_of(args: Any, shape_files: Sequence[Path]) -> tuple[int, int, int]:
    """optimizer_steps for options espnet2's parser has already read (_training_options)."""
    from espnet2.samplers.build_batch_sampler import build_batch_sampler

    sampler = build_batch_sampler(
        type=args.batch_type, shape_files=[str(p) for p in shape_files],
        fold_lengths=args.fold_length, batch_size=args.batch_size, batch_bins=args.batch_bins,
        sort_in_batch=args.sort_in_batch, sort_batch=args.sort_batch,
        drop_last=args.drop_last_iter, min_batch_size=args.min_batch_size)
    batches = len(list(sampler))
    iterations = args.num_iters_per_epoch or batches
    return max(1, iterations // max(1, args.accum_grad)), args.max_epoch, batches


def _training_options(config: Path, extra_args: Sequence[str]) -> Any:
    """The options espnet2 will train with: `config` under `extra_args`, by its own parser (the
    last of a repeated option wins, as in training)."""
    from cvasr.training.task import CvasrASRTask

    args, _ = CvasrASRTask.get_parser().parse_known_args(["--config", str(config),
                                                          *extra_args])
    return args


def schedule_from_data(config: Path, shape_files: Sequence[Path],
                       extra_args: Sequence[str] = ()) -> str | None:
    """Fill every `auto` step of `scheduler_conf.warmup_steps_list` in `config` (in place) with
    the run's last optimizer step: steps an epoch x max_epoch, so a schedule that decays to the
    end of training (the seed's) does so for any training set, batch size and epoch count.
    Returns a line saying what it computed, or None when the config has no `auto`."""
    config = Path(config)
    conf = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    steps_list = (conf.get("scheduler_conf") or {}).get("warmup_steps_list")
    if not isinstance(steps_list, list) or SCHEDULE_FROM_DATA not in steps_list:
        return None
    per_epoch, max_epoch, batches = optimizer_steps(config, shape_files, extra_args)
    total = per_epoch * max_epoch
    lrs = conf["scheduler_conf"].get("warmup_lr_list")
    filled = [total if s == SCHEDULE_FROM_DATA else s for s in steps_list]
    if (not isinstance(lrs, list) or len(lrs) != len(filled)
            or not all(isinstance(s, (int, float)) for s in filled)
            or filled[:-1] != sorted(filled[:-1]) or filled[-1] != total):
        raise ConfigError(f"{config}: scheduler_conf needs warmup_steps_list (rising step numbers, "
                          f"the last one {SCHEDULE_FROM_DATA}) and warmup_lr_list of the same "
                          f"length; got {steps_list} and {lrs}")
    note = ""
    if len(filled) > 1 and total <= filled[-2]:
        # training ends before the schedule's last turn: the schedule up to `total`, as the
        # seed's linear warm-up schedule behaves when warm-up outlasts training
        steps = [s for s in filled[:-1] if s < total]
        lr_at_end = float(np.interp(total, filled[:-1], lrs[:-1]))
        filled, lrs = steps + [total], lrs[:len(steps)] + [lr_at_end]
        conf["scheduler_conf"]["warmup_lr_list"] = lrs
        note = " (training ends inside the warm-up: the schedule is cut there)"
    conf["scheduler_conf"]["warmup_steps_list"] = filled
    config.write_text(yaml.safe_dump(conf, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return (f"learning-rate schedule from the data: {batches} batches an epoch, {per_epoch} "
            f"optimizer steps an epoch x {max_epoch} epochs = {total} steps; "
            f"warmup_steps_list {filled}, warmup_lr_list {lrs}{note}")


def compile_from_data(config: Path, shape_files: Sequence[Path], exp_dir: Path,
                      extra_args: Sequence[str] = (), *, ngpu: int
                      ) -> tuple[list[str], str | None]:
    """Settle `compile_upstream: auto` (the config's, or the last `--compile_upstream` of
    `extra_args`): false without a GPU (`ngpu` 0: training compiles on GPUs only), else true
    when the run plans at least COMPILE_PAYS_AFTER_STEPS training steps
    (batches an epoch x max_epoch) or when the compile cache (`exp_dir`'s, see
    compile_cache_env) holds compiled graphs (a resumed or repeated run loads them in seconds),
    else false: on a cold machine the compile costs minutes that a short run does not earn
    back. Returns the option to add after `extra_args` and a line saying what it chose and why
    (and, when eager, that a `compile_mode` other than the default goes unused); ([], None) when
    nothing is auto."""
    from cvasr.defaults import COMPILE_PAYS_AFTER_STEPS

    options = _training_options(config, extra_args)
    if options.compile_upstream != COMPILE_FROM_DATA:
        return [], None
    if ngpu == 0:
        return (["--compile_upstream", "false"],
                "compile_upstream auto: no GPU (--ngpu 0); the transformer runs eager")
    _, max_epoch, batches = _steps_of(options, shape_files)
    steps = batches * max_epoch
    cache = compile_cache_dir(exp_dir)
    warm = any(p.is_file() for sub in ("fxgraph", "aotautograd") for p in (cache / sub).rglob("*"))
    compiled = warm or steps >= COMPILE_PAYS_AFTER_STEPS
    if warm:
        why = f"compiled graphs in {cache} (they load in seconds)"
    else:
        why = (f"{batches} batches an epoch x {max_epoch} epochs = {steps} training steps, "
               f"{'at least' if compiled else 'fewer than'} the {COMPILE_PAYS_AFTER_STEPS:,} that "
               "pay for compiling on a cold machine")
    line = f"compile_upstream auto: {why}; the transformer " + (
        "is compiled" if compiled else "runs eager")
    if compiled and not warm:  # else the first epoch looks like a hang
        line += (" (its first epoch compiles it: about 3-4 minutes on an H200, cached in "
                 f"{cache} for the next run)")
    if not compiled and options.compile_mode != "default":  # easy to miss (bench/NOTES.md,
        # round 15, lost a GPU run to it)
        line += (f" (compile_mode {options.compile_mode} goes unused; --compile_upstream true "
                 "compiles it whatever the run's length)")
    return ["--compile_upstream", str(compiled).lower()], line


def train(dump_dir: Path, token_list: Path, stats_dir: Path, config: Path, exp_dir: Path,
          ngpu: int = 0, extra_args: Sequence[str] = (), train_split: str = "train",
          valid_split: str = "dev", launch: Launch = Launch()) -> None:
    """espnet2 training into exp_dir, resuming from exp_dir/checkpoint.pth when it exists;
    its processes started as `launch` says (cvasr.training.launch)."""
    exp_dir, stats_dir = Path(exp_dir), Path(stats_dir)
    check_resume_compatible(exp_dir, token_list)
    token_type = _token_type(token_list)
    shape_files = [stats_dir / "train" / "speech_shape",
                   stats_dir / "train" / f"text_shape.{token_type}"]
    schedule = schedule_from_data(config, shape_files, extra_args)
    if schedule:
        print(schedule, flush=True)
    compile_args, compiling = compile_from_data(config, shape_files, exp_dir, extra_args,
                                                ngpu=ngpu)
    if compiling:  # on the console: whether the transformer is compiled decides the speed
        say(compiling)
    derived = SCHEDULE_KEYS if schedule else ()
    args = [*_token_args(token_list), "--config", str(config), "--output_dir", str(exp_dir),
            "--resume", "true",
            *_data_args(dump_dir, train_split, "train"), *_data_args(dump_dir, valid_split, "valid"),
            "--train_shape_file", str(stats_dir / "train" / "speech_shape"),
            "--train_shape_file", str(stats_dir / "train" / f"text_shape.{token_type}"),
            "--valid_shape_file", str(stats_dir / "valid" / "speech_shape"),
            "--valid_shape_file", str(stats_dir / "valid" / f"text_shape.{token_type}")]
    _train_as_planned([*args, *extra_args, *compile_args], exp_dir, derived, ngpu, launch)


def _train_as_planned(args: list[str], exp_dir: Path, derived: Sequence[str] = (),
                      ngpu: int = 0, launch: Launch = Launch()) -> None:
    """Stage 4's run of espnet2: refused or skipped when resuming could not honour the config
    (cvasr.training.resume), one console line an epoch (cvasr.training.epoch_lines); node
    ranks other than 0 started here (`launch.local_nodes`) write train.node<R>.log."""
    from cvasr.training.epoch_lines import EpochLines
    from cvasr.training.resume import plan_resume

    plan = plan_resume(exp_dir, args, derived)
    for line in plan.lines:
        say(line)
    if not plan.run:
        return
    say(f"espnet2 trains; its whole output is in {exp_dir / 'train.log'}")
    epochs = EpochLines()

    def on_line(line: str) -> None:
        if (summary := epochs(line)) is not None:
            say(summary)

    env = compile_cache_env(exp_dir)
    first, *others = processes([*args, *plan.extra_args], ngpu, launch, exp_dir)
    started: list[tuple[Path, subprocess.Popen]] = []
    exp_dir.mkdir(parents=True, exist_ok=True)
    try:
        for proc in others:
            log = exp_dir / f"train.node{proc.node_rank}.log"
            with open(log, "a", encoding="utf-8") as out:
                _log_command(out, proc.cmd)
                started.append((log, subprocess.Popen(
                    proc.cmd, stdout=out, stderr=subprocess.STDOUT,
                    env=_task_env({**env, **proc.env}))))
        _run(first.cmd, log=exp_dir / "train.log", on_line=on_line, env={**env, **first.env})
    except BaseException:
        for _, proc in started:  # node 0 failed or was interrupted: the others cannot go on
            proc.terminate()
            proc.wait()
        raise
    for log, proc in started:
        if proc.wait() != 0:
            raise RuntimeError(f"a node of the training ({log.name}) exited with status "
                               f"{proc.returncode}; see {log}")


def compile_cache_env(exp_dir: Path) -> dict[str, str]:
    """torch.compile's caches (inductor's graphs and kernels, Triton's binaries) under the
    experiment dir, unless the user set TORCHINDUCTOR_CACHE_DIR: a resumed or repeated run, on
    this machine or another sharing the dir, loads the compiled upstream in seconds instead of
    compiling it for minutes (bench/NOTES.md, cold start)."""
    if _users_inductor_cache() is not None:
        return {}
    return {"TORCHINDUCTOR_CACHE_DIR": str(compile_cache_dir(exp_dir))}


def compile_cache_dir(exp_dir: Path) -> Path:
    """Where the training processes keep torch.compile's caches (compile_cache_env)."""
    return Path(_users_inductor_cache() or Path(exp_dir).resolve() / COMPILE_CACHE)


def _users_inductor_cache() -> str | None:
    """TORCHINDUCTOR_CACHE_DIR as the user set it: importing parts of torch (espnet2's task
    does) sets it to inductor's default in this process, which is not a choice to follow."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    value = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return value if value and value != default_cache_dir() else None
