"""After how many training steps compiling the transformer pays, from stage 4's own logs.

Why: `compile_upstream: auto` (defaults.COMPILE_PAYS_AFTER_STEPS) compiles when a run plans at
least that many steps. This reads espnet2's train.log of a compiled and of an eager stage-4 run
(bench/train_e2e.py's reader) and prints, for each compiled one: what its first `--first` epochs
cost over as many steady epochs (the compile, CUDA graphs recorded, the first validation), the
same for the eager run, the steady epoch time of each (epochs after `--first`), and the
break-even: (compiled's extra - eager's extra) / (time saved a step).
  python bench/compile_pays.py --eager bench/results/e2e_cudagraphs_syncfree_cd29c37/ours_train.log \
      --compiled bench/results/e2e_committed_0047ad6/ours_train.log \
      bench/results/e2e_committed_07ce527_unparsed/ours_train.log --steps-per-epoch 17
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_e2e import espnet2_epochs  # noqa: E402


def phases(train_log: Path, first: int) -> tuple[float, float]:
    """(seconds the first `first` epochs took over as many steady ones, a steady epoch's mean
    wall seconds): epoch 1 as espnet2 timed it, later epochs from when their results were
    logged."""
    rows = espnet2_epochs(train_log)
    walls = [rows[0]["train_seconds"] + rows[0]["valid_seconds"]]
    walls += [b["logged_at"] - a["logged_at"] for a, b in zip(rows, rows[1:])]
    if len(walls) <= first:
        raise SystemExit(f"{train_log}: {len(walls)} epochs, need more than {first}")
    steady = statistics.mean(walls[first:])
    return sum(walls[:first]) - first * steady, steady


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eager", type=Path, required=True, help="train.log of an eager run")
    parser.add_argument("--compiled", type=Path, nargs="+", required=True,
                        help="train.log of compiled runs")
    parser.add_argument("--steps-per-epoch", type=int, required=True)
    parser.add_argument("--first", type=int, default=5, help="epochs counted as start-up")
    args = parser.parse_args()

    eager_extra, eager_steady = phases(args.eager, args.first)
    print(f"| run | start-up s over steady | steady s an epoch | saved ms a step | pays from steps |")
    print("|---|---:|---:|---:|---:|")
    print(f"| eager: {args.eager} | {eager_extra:.1f} | {eager_steady:.3f} | - | - |")
    for log in args.compiled:
        extra, steady = phases(log, args.first)
        saved = (eager_steady - steady) / args.steps_per_epoch
        pays = (extra - eager_extra) / saved if saved > 0 else float("inf")
        print(f"| compiled: {log} | {extra:.1f} | {steady:.3f} | {1000 * saved:.1f} | "
              f"{pays:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
