"""The training processes stage 4 starts for each launcher (cvasr.training.launch)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cvasr.training.launch import (Launch, LaunchError, close_process_group, fork_data_workers,
                                   free_port, processes, set_nccl_defaults)

TASK = ["-m", "cvasr.training.task", "--config", "c.yaml"]


def test_espnet2_spawns_its_own_processes_for_several_gpus(tmp_path: Path) -> None:
    (one,) = processes(["--config", "c.yaml"], 1, Launch(), tmp_path)
    assert one.cmd == [sys.executable, *TASK, "--ngpu", "1"] and one.env == {}
    (four,) = processes(["--config", "c.yaml"], 4, Launch(), tmp_path)
    assert four.cmd[:-4] == [sys.executable, *TASK, "--ngpu", "4"]
    assert four.cmd[-4:-1] == ["--multiprocessing_distributed", "true", "--dist_init_method"]
    assert four.cmd[-1].startswith(f"file://{tmp_path}/.dist_init_")


def test_torchrun_takes_its_ranks_from_the_environment(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    (node,) = processes(["--config", "c.yaml"], 2, Launch("torchrun", master_port=29500),
                        tmp_path)
    assert node.cmd == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--node-rank", "0", "--master-addr", "127.0.0.1", "--master-port", "29500", *TASK,
        # espnet2's default multiprocessing_distributed would put every process on GPU 0
        "--ngpu", "1", "--multiprocessing_distributed", "false", "--dist_init_method", "env://"]
    (cpu,) = processes([], 0, Launch("torchrun", master_port=1, cpu_processes=3), tmp_path)
    assert cpu.cmd[cpu.cmd.index("--nproc-per-node") + 1] == "3"
    assert cpu.cmd[-2:] == ["--dist_backend", "gloo"]


def test_local_nodes_split_the_visible_gpus(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6,7")
    nodes = processes([], 4, Launch("torchrun", nnodes=2, local_nodes=True, master_port=7),
                      tmp_path)
    assert [p.node_rank for p in nodes] == [0, 1]
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in nodes] == ["3,5", "6,7"]
    for rank, p in enumerate(nodes):
        at = p.cmd.index("--nnodes")
        assert p.cmd[at:at + 6] == ["--nnodes", "2", "--nproc-per-node", "2", "--node-rank",
                                    str(rank)]
    # a real cluster: this machine's rank only, all of its GPUs
    (mine,) = processes([], 4, Launch("torchrun", nnodes=3, node_rank=2, master_addr="h0",
                                      master_port=7), tmp_path)
    assert mine.env == {} and mine.cmd[mine.cmd.index("--nproc-per-node") + 1] == "4"
    assert mine.cmd[mine.cmd.index("--master-addr") + 1] == "h0"


@pytest.mark.parametrize("ngpu, launch, message", [
    (2, Launch("espnet2", nnodes=2), "needs --launcher torchrun"),
    (2, Launch("torchrun", nnodes=2, node_rank=2, master_port=7),
     "--node-rank 2 is not one of the 2"),
    (3, Launch("torchrun", nnodes=2, local_nodes=True), "3 GPUs do not split over 2"),
    (2, Launch("mpirun"), "unknown launcher 'mpirun'"),
    (2, Launch("torchrun", nnodes=2), "needs --master-port"),
])
def test_impossible_launches_say_why(tmp_path: Path, ngpu: int, launch: Launch,
                                     message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        processes([], ngpu, launch, tmp_path)


def test_nccl_defaults_leave_the_users_settings() -> None:
    env: dict[str, str] = {}
    set_nccl_defaults(env)
    assert env == {"NCCL_BLOCKING_WAIT": "0", "NCCL_DEBUG": "WARN"}
    env = {"TORCH_NCCL_BLOCKING_WAIT": "1", "NCCL_DEBUG": "INFO"}
    set_nccl_defaults(env)
    assert env == {"TORCH_NCCL_BLOCKING_WAIT": "1", "NCCL_DEBUG": "INFO"}


def test_espnet2_keeps_our_nccl_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """espnet2's own process-group start (gloo here, as NCCL needs GPUs) would turn blocking
    wait on and NCCL's INFO log; after set_nccl_defaults, as the task's main runs it, it does
    not."""
    import torch.distributed
    from espnet2.train.distributed_utils import DistributedOption

    for name in ("TORCH_NCCL_BLOCKING_WAIT", "NCCL_BLOCKING_WAIT", "NCCL_DEBUG"):
        monkeypatch.setenv(name, "")  # recorded, so what the test sets is undone after it
        monkeypatch.delenv(name)
    option = DistributedOption(distributed=True, dist_backend="gloo",
                               dist_init_method=f"tcp://127.0.0.1:{free_port()}",
                               dist_world_size=1, dist_rank=0, ngpu=0)
    set_nccl_defaults(os.environ)
    option.init_torch_distributed()
    try:
        assert os.environ["NCCL_BLOCKING_WAIT"] == "0" and os.environ["NCCL_DEBUG"] == "WARN"
    finally:
        torch.distributed.destroy_process_group()


PROBE = """
import multiprocessing
import sys

import torch.utils.data

from cvasr.training.launch import fork_data_workers


class Probe(torch.utils.data.Dataset):
    \"\"\"What a worker sees of its parent: a forked one the mark, a spawned one nothing.\"\"\"

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return getattr(sys, "cvasr_probe", "spawned")


if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")  # as in a process espnet2's launcher spawned
    changed = fork_data_workers() if sys.argv[1] == "fork" else None
    sys.cvasr_probe = "forked"
    loader = torch.utils.data.DataLoader(Probe(), batch_size=None, num_workers=1)
    print(changed, next(iter(loader)))
"""


@pytest.mark.parametrize("call, expected", [("fork", "True forked"), ("none", "None spawned")])
def test_data_workers_of_a_spawned_process_are_forked(tmp_path: Path, call: str,
                                                      expected: str) -> None:
    """In a process whose start method is spawn (espnet2's launcher's ranks), DataLoader workers
    are forked once fork_data_workers ran (they see their parent's memory), spawned otherwise."""
    import subprocess

    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    out = subprocess.run([sys.executable, str(script), call], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    assert out.stdout.split("\n")[-2] == expected


def test_fork_data_workers_leaves_other_processes_alone() -> None:
    import multiprocessing

    before = multiprocessing.get_start_method(allow_none=True)
    assert before != "spawn" and fork_data_workers() is False
    assert multiprocessing.get_start_method(allow_none=True) == before


def test_close_process_group_destroys_the_group_once(tmp_path: Path) -> None:
    """A group with a finished gather and a DDP model on it is destroyed (the model let go
    first); without a group it does nothing."""
    import torch
    import torch.distributed as dist

    assert close_process_group() is False
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0,
                            world_size=1)
    try:
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 1))
        model(torch.ones(1, 2)).sum().backward()
        gathered = [torch.empty(1)]
        dist.all_gather(gathered, torch.ones(1))
        del model
        assert close_process_group() is True
        assert not dist.is_initialized()
        assert close_process_group() is False
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
