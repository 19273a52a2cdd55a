"""RESULTS.md: ESPnet's results table, written from the sclite-layout reports of stage 5.

The numbers are read back from each `result.txt` (ours or sclite's), so the table always shows
what the linked report says.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Sequence

from cvasr.decoding.options import RECORD, recorded
from cvasr.scoring.sclite import Counts, _round1, parse_sclite_counts

HEADER = "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|\n|---|---|---|---|---|---|---|---|---|\n"


def _row(name: str, counts: Counts) -> str:
    cells = [f"{_round1(counts.pct(k)):.1f}" for k in ("corr", "sub", "dele", "ins", "err", "serr")]
    return f"|{name}|{counts.snt}|{counts.wrd}|{'|'.join(cells)}|\n"


def _counts(result_txt: Path) -> Counts:
    s = parse_sclite_counts(result_txt)["sum"]
    return Counts(snt=s["snt"], wrd=s["wrd"], corr=s["corr"], sub=s["sub"], dele=s["del"],
                  ins=s["ins"], serr=s["serr"])


def write_results(out: Path, exp_dir: Path, decode_dirs: Sequence[Path], device: str) -> str:
    """Write RESULTS.md at `out` for the decode dirs (each with score_wer/ and score_cer/, and
    decoding.yaml saying how it was decoded). Paths are relative to RESULTS.md's folder."""
    import torch

    out = Path(out)
    base = out.parent.resolve()

    def rel(path: Path) -> str:
        return os.path.relpath(Path(path).resolve(), base)

    def name(d: Path) -> str:
        return f"{Path(d).parent.name}/{Path(d).name}"

    lines = [
        "# Results\n\n",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}\n",
        f"- model: `{rel(exp_dir)}` (`{rel(Path(exp_dir) / 'config.yaml')}`)\n",
    ]
    described = {}
    for d in decode_dirs:
        if (Path(d) / RECORD).is_file():
            options = recorded(d)
            described.setdefault(Path(d).parent.name,
                                 options.describe(rel(options.lm) if options.lm else None))
    for tag, about in described.items():
        tuning = next((Path(d) / "tuning.tsv" for d in decode_dirs
                       if Path(d).parent.name == tag and (Path(d) / "tuning.tsv").is_file()), None)
        tuned = f"; weights tuned on dev: [{rel(tuning)}]({rel(tuning)})" if tuning else ""
        lines.append(f"- {tag}: {about}{tuned}\n")
    lines.append(f"- torch {torch.__version__}, python {platform.python_version()}, "
                 f"device: {device}\n")
    for unit, title in (("wer", "WER"), ("cer", "CER")):
        lines += [f"\n## {title}\n\n", HEADER]
        for d in decode_dirs:
            result = Path(d) / f"score_{unit}" / "result.txt"
            lines.append(_row(f"[{name(d)}]({rel(result)})", _counts(result)))
    text = "".join(lines)
    out.write_text(text, encoding="utf-8")
    return text
