"""How stage 4 starts espnet2's training processes.

- `espnet2`: one process; with --ngpu N > 1 espnet2 spawns one process a GPU itself
  (`--multiprocessing_distributed true`, a rendezvous file in the experiment dir).
- `torchrun`: PyTorch's launcher starts one process a GPU (or `cpu_processes` on the CPU, gloo)
  and espnet2 reads RANK, LOCAL_RANK, WORLD_SIZE and the master address from the environment.
  espnet2 needs `--ngpu 1 --multiprocessing_distributed false` for that: with its default
  (`true`) it takes WORLD_SIZE for a node count, sets LOCAL_RANK to 0 in every process and
  puts all of a machine's processes on its first GPU.
- Several torchrun "nodes": on a cluster, one `cvasr train --launcher torchrun --nnodes K
  --node-rank R --master-addr HOST` on each machine; with `local_nodes` all K node ranks are
  started here, each on its own share of the visible GPUs (CUDA_VISIBLE_DEVICES), which runs
  the multi-node path (a TCP rendezvous, ranks across nodes) on one machine.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import MutableMapping

LAUNCHERS = ("espnet2", "torchrun")

#: NCCL settings for the training processes, where the user has set neither name. espnet2's
#: `init_torch_distributed` sets NCCL_BLOCKING_WAIT=1 and NCCL_DEBUG=INFO unless they are set
#: already. Blocking wait makes the CPU wait for every collective to finish: DDP's gradient
#: buckets and the sync-free step's per-step statistics then cost about 49 host syncs a step on
#: 2 GPUs (bench/NOTES.md, round 5), and the CPU can no longer queue work ahead of the GPU.
#: Without it a collective that hangs is still caught: PyTorch's watchdog ends the process at
#: the collective's timeout (TORCH_NCCL_ASYNC_ERROR_HANDLING, on by default). INFO prints
#: NCCL's channel set-up, dozens of lines a process, into every log.
NCCL_DEFAULTS = {("TORCH_NCCL_BLOCKING_WAIT", "NCCL_BLOCKING_WAIT"): "0",
                 ("NCCL_DEBUG",): "WARN"}


def set_nccl_defaults(environ: MutableMapping[str, str]) -> None:
    """NCCL_DEFAULTS into `environ` (a training process's environment, before espnet2 reads it)
    where none of a setting's names is set; the last name is the one espnet2 defaults."""
    for names, value in NCCL_DEFAULTS.items():
        if not any(name in environ for name in names):
            environ[names[-1]] = value


def fork_data_workers() -> bool:
    """DataLoader workers forked, not spawned, in a process started by `spawn` (espnet2's
    launcher starts one process a GPU that way, and a spawned process inherits that start
    method for its own children). A spawned worker imports torch, espnet2 and s3prl afresh:
    with 2 GPUs and 4 workers each, the first 10 batches waited 7.1 s each on average and the
    first validation took 20 s; forked, 0.026 s and 1.2 s (bench/NOTES.md, round 6). Fork is
    what torchrun's processes and a single process already use; the workers never touch CUDA.
    Returns whether it changed the start method."""
    import multiprocessing

    if (multiprocessing.get_start_method(allow_none=True) == "spawn"
            and "fork" in multiprocessing.get_all_start_methods()):
        multiprocessing.set_start_method("fork", force=True)
        return True
    return False


def close_process_group() -> bool:
    """The process group destroyed once training is done, while the interpreter is whole. Left
    to the interpreter's exit, a gloo thread can still hold a finished collective's tensors and
    aborts the process as it frees them (SIGABRT, "terminate called without an active
    exception"; pytorch#179291): a 2-process CPU run that had trained and written its
    checkpoints failed so. Not after an error, where a peer may still wait in a collective.
    Returns whether there was a group to destroy."""
    import gc

    import torch.distributed

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    gc.collect()  # a DDP model in a reference cycle: its reducer let go while the group lives
    torch.distributed.destroy_process_group()
    return True


class LaunchError(ValueError):
    """A launcher setting that cannot work (the message says which and why)."""


@dataclass(frozen=True)
class Launch:
    """Where and how many training processes: `nnodes` x `nproc_per_node`."""

    launcher: str = "espnet2"
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    #: start every node rank on this machine (the multi-node path on one host)
    local_nodes: bool = False
    #: processes a node when training on the CPU under torchrun (gloo; more than 1 is for
    #: testing DDP without GPUs)
    cpu_processes: int = 1


@dataclass(frozen=True)
class Process:
    """One command to start (a node of torchrun, or espnet2's own process)."""

    cmd: list[str]
    env: dict[str, str]
    #: the node rank it is (0 writes the experiment's train.log)
    node_rank: int


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _visible_gpus(ngpu: int) -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(ngpu)]
    if len(ids) < ngpu:
        raise LaunchError(f"--ngpu {ngpu} but CUDA_VISIBLE_DEVICES={visible} shows {len(ids)}")
    return ids[:ngpu]


def processes(task_args: list[str], ngpu: int, launch: Launch, exp_dir: Path) -> list[Process]:
    """The commands that run espnet2's task with `task_args` on `ngpu` GPUs of this machine
    (0: the CPU), node 0's first."""
    task = ["-m", "cvasr.training.task", *task_args]
    if launch.launcher not in LAUNCHERS:
        raise LaunchError(f"unknown launcher {launch.launcher!r} (one of {', '.join(LAUNCHERS)})")
    if launch.launcher == "espnet2":
        if launch.nnodes != 1:
            raise LaunchError("--nnodes > 1 needs --launcher torchrun (or espnet2's own "
                              "multi-node options, see the README)")
        extra = []
        if ngpu > 1:
            init = exp_dir / f".dist_init_{os.urandom(8).hex()}"
            extra = ["--multiprocessing_distributed", "true", "--dist_init_method",
                     f"file://{init}"]
        return [Process([sys.executable, *task, "--ngpu", str(ngpu), *extra], {}, 0)]
    if launch.nnodes < 1 or not 0 <= launch.node_rank < launch.nnodes:
        raise LaunchError(f"--node-rank {launch.node_rank} is not one of the {launch.nnodes} "
                          "nodes")
    if launch.nnodes > 1 and not launch.local_nodes and launch.master_port is None:
        raise LaunchError("--nnodes > 1 needs --master-port, the same on every node (node 0 "
                          "listens on it)")
    if ngpu and ngpu % (launch.nnodes if launch.local_nodes else 1):
        raise LaunchError(f"{ngpu} GPUs do not split over {launch.nnodes} nodes on this machine")
    per_node = (ngpu // launch.nnodes if launch.local_nodes else ngpu) or launch.cpu_processes
    port = launch.master_port or free_port()
    dist = ["--ngpu", "1" if ngpu else "0", "--multiprocessing_distributed", "false",
            "--dist_init_method", "env://", *([] if ngpu else ["--dist_backend", "gloo"])]
    ranks = range(launch.nnodes) if launch.local_nodes else [launch.node_rank]
    gpus = _visible_gpus(ngpu) if ngpu else []
    out = []
    for rank in ranks:
        env = {}
        if ngpu and launch.local_nodes:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[rank * per_node:(rank + 1) * per_node])
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(launch.nnodes),
               "--nproc-per-node", str(per_node), "--node-rank", str(rank), "--master-addr",
               launch.master_addr, "--master-port", str(port), *task, *dist]
        out.append(Process(cmd, env, rank))
    return out
