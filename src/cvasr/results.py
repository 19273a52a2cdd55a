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

from cvasr.scoring import Counts, _round1, parse_sclite_counts

HEADER = "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|\n|---|---|---|---|---|---|---|---|---|\n"


def _row(name: str, counts: Counts) -> str:
    cells = [f"{_round1(counts.pct(k)):.1f}" for k in ("corr", "sub", "dele", "ins", "err", "serr")]
    return f"|{name}|{counts.snt}|{counts.wrd}|{'|'.join(cells)}|\n"


def _counts(result_txt: Path) -> Counts:
    s = parse_sclite_counts(result_txt)["sum"]
    return Counts(snt=s["snt"], wrd=s["wrd"], corr=s["corr"], sub=s["sub"], dele=s["del"],
                  ins=s["ins"], serr=s["serr"])


def write_results(out: Path, exp_dir: Path, decode_dirs: Sequence[Path], decode_options: str,
                  device: str) -> str:
    """Write RESULTS.md at `out` for the decode dirs (each with score_wer/ and score_cer/)."""
    import torch

    out = Path(out)
    lines = [
        "# Results\n\n",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}\n",
        f"- model: `{exp_dir}` (`{(Path(exp_dir) / 'config.yaml')}`)\n",
        f"- decoding: {decode_options}\n",
        f"- torch {torch.__version__}, python {platform.python_version()}, device: {device}\n",
    ]
    for unit, title in (("wer", "WER"), ("cer", "CER")):
        lines += [f"\n## {title}\n\n", HEADER]
        for d in decode_dirs:
            result = Path(d) / f"score_{unit}" / "result.txt"
            link = os.path.relpath(result, out.parent)
            name = f"{Path(d).parent.name}/{Path(d).name}"
            lines.append(_row(f"[{name}]({link})", _counts(result)))
    text = "".join(lines)
    out.write_text(text, encoding="utf-8")
    return text
