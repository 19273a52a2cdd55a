"""Training curves that carry data: images/<statistic>.png only for statistics with a value.

espnet2's reporter plots every statistic the model reports, and a CTC-only model reports the
attention decoder's `loss_att`, `acc`, `cer` and `wer` as NaN every epoch: four empty plots of
the 17. `plot_curves` draws the same figures as espnet2's `Reporter.matplotlib_plot`, only for
statistics with at least one finite value, each with only the phases (train, valid) that have
one, and removes the image of a statistic that has none, left by an earlier plot.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _finite(value: Any) -> bool:
    try:
        return not math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def curves_with_data(stats: dict[int, dict[str, dict[str, Any]]]) -> dict[str, list[str]]:
    """statistic -> the phases that have a finite value for it in some epoch, from a reporter's
    `stats` ({epoch: {phase: {statistic: value}}}); `time` and `total_count` are not curves."""
    curves: dict[str, list[str]] = {}
    for epoch in sorted(stats):
        for phase, values in stats[epoch].items():
            for key, value in values.items():
                if key in ("time", "total_count") or not _finite(value):
                    continue
                phases = curves.setdefault(key, [])
                if phase not in phases:
                    phases.append(phase)
    return curves


def plot_curves(reporter: Any, output_dir: Path) -> list[Path]:
    """espnet2's per-statistic figures for the statistics that carry data; returns the files."""
    output_dir = Path(output_dir)
    curves = curves_with_data(reporter.stats)
    written = []
    for key, phases in sorted(curves.items()):
        plt = reporter._plot_stats(phases, key)  # espnet2's own figure, the phases with data
        path = output_dir / f"{key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        plt.savefig(path)
        written.append(path)
    every = {k for epoch in reporter.stats.values() for values in epoch.values() for k in values}
    for key in every - set(curves):
        (output_dir / f"{key}.png").unlink(missing_ok=True)
    return written
