"""Stage 5's choice of the LM weight and word bonus: a grid, decoded on dev, best WER wins.

The model's log-posteriors are computed once (the CTC-alone decode keeps them); each grid point
is only another search over them. The winner has the lowest dev WER, then the lowest CER, then
comes first in the grid (smaller weights first). Test is never looked at.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from cvasr.decoding.decoder import Search, Tokens
from cvasr.decoding.options import DecodingOptions
from cvasr.scoring.sclite import count_errors


@dataclass(frozen=True)
class GridPoint:
    lm_weight: float
    word_bonus: float
    wer: float
    cer: float
    words: int
    chars: int
    seconds: float


def tune_lm(tokens: Tokens, logps: Mapping[str, np.ndarray], refs: Mapping[str, str],
            options: DecodingOptions, threads: int = 1, on_point=None,
            frame_shift: float | None = None) -> tuple[DecodingOptions, list[GridPoint]]:
    """Every (lm_weight, word_bonus) of the options' grid decoded and scored on `refs`; the
    options with the best pair, and the grid's results in grid order. `frame_shift`: the
    log-posteriors' seconds a frame, so that long utterances are cut as decode cuts them
    (see Search)."""
    if options.lm is None:
        raise ValueError("tuning the LM weights needs an LM (options.lm is not set)")
    missing = [u for u in logps if u not in refs]
    if missing:
        raise ValueError(f"{len(missing)} utterance(s) have no reference, e.g. {missing[0]}")
    utts = sorted(logps)
    points = []
    for weight in options.lm_weights:
        for bonus in options.word_bonuses:
            start = time.perf_counter()
            point_options = dataclasses.replace(options, lm_weight=weight, word_bonus=bonus)
            hyps = Search(tokens, point_options, frame_shift).many([logps[u] for u in utts],
                                                                   threads)
            pairs = [(refs[u].split(), h.text.split()) for u, h in zip(utts, hyps)]
            words, chars = count_errors(pairs, "word"), count_errors(pairs, "char")
            point = GridPoint(weight, bonus, words.pct("err"), chars.pct("err"), words.wrd,
                              chars.wrd, time.perf_counter() - start)
            points.append(point)
            if on_point is not None:
                on_point(point)
    best = min(points, key=lambda p: (round(p.wer, 6), round(p.cer, 6)))
    return dataclasses.replace(options, lm_weight=best.lm_weight,
                               word_bonus=best.word_bonus), points


def write_grid(path: Path, points: list[GridPoint], chosen: DecodingOptions) -> None:
    """The grid as a tab-separated table, the chosen row marked."""
    lines = ["lm_weight\tword_bonus\twer\tcer\tseconds\tchosen"]
    for p in points:
        mark = "*" if (p.lm_weight, p.word_bonus) == (chosen.lm_weight, chosen.word_bonus) else ""
        lines.append(f"{p.lm_weight:g}\t{p.word_bonus:g}\t{p.wer:.2f}\t{p.cer:.2f}\t"
                     f"{p.seconds:.2f}\t{mark}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
