"""The checkpoint writer process on a GPU (cvasr.training.writer_process): what CPU tests cannot
reach, a CUDA snapshot handed over by CUDA IPC.

Runs an EpochWriter (a checkpoint every epoch, the 2 best epoch models kept) over a few
epochs of a state on the GPU in a child Python, then checks that checkpoint.pth and the epoch
files load equal to what was handed over, and whether torch warned at the child's exit of
shared CUDA memory still held ("Producer process has been terminated before all shared CUDA
tensors released"). Prints the findings and saves JSON.
  python bench/writer_process_gpu.py --out bench/results/writer_process_gpu.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

WARNING = "Producer process has been terminated before all shared CUDA tensors released"


def state_of(epoch: int, device: str) -> dict:
    torch.manual_seed(epoch)
    return {f"layer{i}.weight": torch.randn(1024, 1024, device=device) for i in range(16)}


def child(output_dir: Path, epochs: int, device: str) -> None:
    from cvasr.training.checkpoints import EpochWriter

    writer = EpochWriter(output_dir, max_epoch=epochs, criteria=[["valid", "cer", "min"]],
                         keep_nbest=2, every_epochs=1, background=True)
    for epoch in range(1, epochs + 1):
        model = state_of(epoch, device)
        reporter = {"epoch": epoch, "stats": {e: {"valid": {"cer": 1.0 / e}}
                                              for e in range(1, epoch + 1)}}
        writer.on_checkpoint({"model": model, "reporter": reporter})
        writer.on_epoch_model(epoch, model)
    writer.flush()
    writer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.epochs, args.device)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        run = subprocess.run([sys.executable, __file__, "--child", str(out), "--epochs",
                              str(args.epochs), "--device", args.device],
                             capture_output=True, text=True, check=False)
        checkpoint = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)
        last = {k: v.cpu() for k, v in state_of(args.epochs, args.device).items()}
        result = {
            "device": args.device, "epochs": args.epochs, "child_exit_code": run.returncode,
            "checkpoint_epoch": checkpoint["reporter"]["epoch"],
            "checkpoint_equal": all(torch.equal(checkpoint["model"][k], v)
                                    for k, v in last.items()),
            "epoch_files": sorted(p.name for p in out.glob("*epoch.pth")),
            "last_epoch_file_equal": all(
                torch.equal(torch.load(out / f"{args.epochs}epoch.pth")[k], v)
                for k, v in last.items()),
            "ipc_warning_at_exit": WARNING in run.stderr,
        }
    for key, value in result.items():
        print(f"{key}: {value}")
    if run.returncode != 0:
        print(run.stderr[-3000:])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if run.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
