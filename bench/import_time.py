#!/usr/bin/env python3
"""Seconds a fresh interpreter takes to import what the recipe's processes import, with
typeguard's instrumentation at import (typeguard's own `@typechecked`, as before) against
deferred to each function's first call (cvasr.deferred_typechecks, what `import cvasr` installs).
Both runs import cvasr first (the same network-free g2p_en stand-in); they differ only in the
decorator. Alternating runs, median of --repeats; a table, and JSON (--out).

    python3 bench/import_time.py --out bench/results/import_time.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import git_revision  # noqa: E402  (numpy only at import)

#: what the processes of stages 3 and 4 import: espnet2's ASR task, and our training task with it
#: (stage 5's decoder imports only the classes a model names, cvasr.models.loader)
MODULES = ("espnet2.tasks.asr", "cvasr.training.task")

#: put typeguard's own decorator back before anything else imports it
EAGER = ("import typeguard\n"
         "from cvasr import deferred_typechecks\n"
         "typeguard.typechecked = deferred_typechecks._EAGER[0]\n")


def import_seconds(module: str, eager: bool) -> float:
    code = ("import time\nt0 = time.perf_counter()\nimport cvasr\n" + (EAGER if eager else "")
            + f"import {module}\nprint(time.perf_counter() - t0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"importing {module} failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "import_time.json")
    args = parser.parse_args()
    import_seconds("espnet2.tasks.asr", eager=True)  # a first run compiles the .pyc files
    rows = {}
    for module in MODULES:
        runs: dict[str, list[float]] = {"eager": [], "deferred": []}
        for _ in range(args.repeats):
            for mode in runs:
                runs[mode].append(round(import_seconds(module, mode == "eager"), 3))
        eager, deferred = (statistics.median(runs[m]) for m in ("eager", "deferred"))
        rows[module] = {"eager_s": eager, "deferred_s": deferred,
                        "saved_s": round(eager - deferred, 3), "runs": runs}
    result = {"benchmark": "import_time", "git_revision": git_revision(),
              "python": platform.python_version(), "machine": platform.machine(),
              "cpus": __import__("os").cpu_count(), "repeats": args.repeats,
              "date": time.strftime("%Y-%m-%d"), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| import (fresh interpreter, median of {args.repeats}) | typeguard at import s | "
          "at first call s | saved s |")
    print("|---|---:|---:|---:|")
    for module, row in rows.items():
        print(f"| {module} | {row['eager_s']:.2f} | {row['deferred_s']:.2f} | "
              f"{row['saved_s']:.2f} |")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
