#!/usr/bin/env python3
"""The step option that compiles the layer as the fastest of `step_kernels.py --parts layer`'s
inductor variants does, for a `train_throughput.py --try` row (issue 17, round 19): one device
call times the layer's variants and then the step with the winner, where a second call would
cost minutes of the session's device time.

Prints `--compile_options key=value ...` for the variant with the least GPU time a layer among
those named, or nothing where the baseline variant (no inductor options) is the fastest or a
variant failed to give a time:

    python3 bench/fastest_layer_variant.py layer.json seed_dropouts seed_dropouts_mix_order_split64 ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fastest_options(rows: dict, names: list[str]) -> str:
    timed = {n: rows[n] for n in names if n in rows and "gpu_ms" in rows[n]}
    if not timed:
        return ""
    best = min(timed, key=lambda n: timed[n]["gpu_ms"])
    options = timed[best].get("inductor") or {}
    return " ".join(f"--compile_options {key}={json.dumps(value)}"
                    for key, value in options.items())


def main() -> None:
    rows = json.loads(Path(sys.argv[1]).read_text())["layer"]["rows"]
    print(fastest_options(rows, sys.argv[2:]))


if __name__ == "__main__":
    main()
