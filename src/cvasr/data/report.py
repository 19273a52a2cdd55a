"""`data/prep_report.json`: what stages 1 and 2 did with every clip a split listed.

Per split: clips listed, clips kept, and each dropped clip with its reason, the stage that
dropped it and whether it was bad input or a deliberate filter (length, empty text). Only bad
input counts against `--max_drop`; filters are by design. Notes record clips kept after a repair
(for example resampled from 44.1 kHz stereo).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cvasr.console import say

BAD_INPUT = "bad_input"
FILTERED = "filtered"


@dataclass
class Drop:
    clip: str
    reason: str
    stage: int
    kind: str = BAD_INPUT
    source: str = ""  # "file:line" of the tsv row, when there is one


@dataclass
class SplitReport:
    listed: int = 0
    dropped: list[Drop] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return self.listed - len(self.dropped)

    def bad_input_share(self) -> float:
        bad = sum(d.kind == BAD_INPUT for d in self.dropped)
        return bad / self.listed if self.listed else 0.0

    def reasons(self, kind: str | None = None) -> Counter[str]:
        """Drop reasons with their counts; reasons that name a number are grouped by their kind."""
        return Counter(d.reason.split(":")[0] for d in self.dropped if kind in (None, d.kind))


@dataclass
class PrepReport:
    splits: dict[str, SplitReport] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)

    def forget_stage(self, stage: int) -> None:
        """Drop what an earlier run of `stage` recorded, so that a re-run does not count twice."""
        for split in self.splits.values():
            split.dropped = [d for d in split.dropped if d.stage != stage]
            split.notes = [n for n in split.notes if n.get("stage") != str(stage)]

    def save(self, path: Path) -> None:
        data = {"info": self.info, "splits": {
            name: {"listed": s.listed, "kept": s.kept,
                   "dropped": [asdict(d) for d in s.dropped], "notes": s.notes}
            for name, s in self.splits.items()}}
        partial = Path(str(path) + ".partial")
        partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(partial, path)

    @classmethod
    def load(cls, path: Path) -> "PrepReport":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(info=data.get("info", {}), splits={
            name: SplitReport(listed=s["listed"],
                              dropped=[Drop(**d) for d in s["dropped"]], notes=s.get("notes", []))
            for name, s in data["splits"].items()})

    def summary(self, stage: int) -> str:
        """A few lines for stderr: per split, kept of listed, and this stage's drop reasons."""
        lines = []
        for name, s in self.splits.items():
            mine = [d for d in s.dropped if d.stage == stage]
            reasons = Counter(d.reason.split(":")[0] for d in mine)
            detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "none dropped"
            lines.append(f"{name}: kept {s.kept} of {s.listed} clips; stage {stage}: {detail}")
            for d in mine[:3]:
                lines.append(f"    {d.source or d.clip}: {d.reason}")
            if len(mine) > 3:
                lines.append(f"    ... {len(mine) - 3} more in the report")
        return "\n".join(lines)


class TooManyDropped(Exception):
    """A split lost more than --max_drop of its clips to bad input."""


def check_max_drop(report: PrepReport, max_drop: float, report_path: Path) -> None:
    failing = []
    for name, s in report.splits.items():
        share = s.bad_input_share()
        if share > max_drop:
            worst = ", ".join(f"{r} ({n})" for r, n in s.reasons(BAD_INPUT).most_common(3))
            failing.append(f"{name} lost {share:.1%} of {s.listed} clips to bad input "
                           f"(--max_drop {max_drop:g}); worst reasons: {worst}")
    if failing:
        raise TooManyDropped("; ".join(failing) + f". Every dropped clip is listed in {report_path}")


def print_summary(report: PrepReport, stage: int) -> None:
    """The summary to the log; to the console too when this stage dropped clips."""
    text = report.summary(stage)
    if any(d.stage == stage for s in report.splits.values() for d in s.dropped):
        for line in text.splitlines():
            say(line)
    else:
        print(text, file=sys.stderr)
