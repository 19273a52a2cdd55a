"""What the small system benches (checkpoint_fs, checkpoint_gil, loader_exit) print and save:
a markdown table of their rows and a JSON with the machine's facts beside them."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch


def machine() -> dict[str, Any]:
    """The facts every result carries: CPUs, torch, Python."""
    return {"cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version()}


def print_table(first: str, columns: list[tuple[str, str]], rows: dict[str, dict]) -> None:
    """One line a row: its name under `first`, then each (header, key) column's value, as
    the value's own format or with 2 decimals for floats."""
    width = max(len(first), *(len(name) for name in rows))
    print(f"| {first:<{width}} | " + " | ".join(h for h, _ in columns) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * (len(h) + 2) for h, _ in columns) + "|")
    for name, row in rows.items():
        cells = [f"{row[key]:.2f}" if isinstance(row[key], float) else str(row[key])
                 for _, key in columns]
        print(f"| {name:<{width}} | "
              + " | ".join(f"{c:>{len(h)}}" for c, (h, _) in zip(cells, columns)) + " |")


def save(out: Path | None, result: dict[str, Any]) -> None:
    """`result` with the machine's facts as JSON at `out` (nothing when None)."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**result, **machine()}, indent=2) + "\n")
    print(f"saved {out}")
