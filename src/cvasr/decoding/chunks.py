"""Long inputs in pieces: the model runs on overlapping windows, the search on segments cut at
pauses. Pure functions over sample and frame counts; no model.

Windows. Self-attention is quadratic in length: `cvasr transcribe` of a 10-minute file needed
over 24 GB. The model therefore sees windows of at most `window` seconds (by default 20 s, the
longest clip stage 2 lets into training, so the model never sees more context than it was
trained on) that advance by `window - overlap`. A CTC model's output for a window depends only
on that window's audio. Every window starts on a multiple of the model's frame shift (S samples
a frame, measured on the model), so a window starting at sample s gives the frames s/S, s/S + 1,
... of the whole input (the frontend's framing is the same from any multiple of S). The windows'
frames are cut at the middle of each overlap and laid end to end: every frame of the input comes
from exactly one window, and, except at the ends of the input, with at least `overlap / 2` of
audio on both sides. Nothing is stitched as text, so no word can be doubled or dropped at a
window boundary: the search runs once over the stitched log-posteriors. The other way, cutting
the audio at low-energy points, depends on a threshold that noise or music defeats, and still
leaves the model no context at the cut.

Segments. The search and the best alignment (token scores, times) of a labelling cost memory in
frames x tokens, and a word LM trained on sentences scores a 10-minute run of words as one
sentence. An input longer than one window is therefore searched in segments, cut in the middle
of pauses: runs of at least `pause` seconds of frames the model gives to the blank (or the word
break). A pause holds no token, so cutting there changes no labelling (greedy search gives
exactly the text of the whole), and each segment is a stretch of speech between pauses, with
its own start and end time. A segment still longer than a window is cut in its longest run of
such frames, however short. Inputs up to one window long are searched whole, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Window:
    """Samples [start, end) of the input; of the window's frames, [keep_from, keep_to) are
    kept (keep_to None: to its last frame)."""

    start: int
    end: int
    keep_from: int
    keep_to: int | None


def plan_windows(n_samples: int, stride: int, window: int, overlap: int) -> list[Window]:
    """Windows over n_samples: `window` and `overlap` in samples (rounded down to whole frames
    of `stride` samples; the overlap to an even number of frames)."""
    window_frames = window // stride
    half = (overlap // stride) // 2
    hop = window_frames - 2 * half
    if half < 1 or hop < 1:
        raise ValueError(f"windows of {window} samples overlapping by {overlap} do not fit the "
                         f"model's frame shift of {stride} samples: the overlap must be at least "
                         "two frames and shorter than the window")
    if n_samples <= window_frames * stride:
        return [Window(0, n_samples, 0, None)]
    starts = [0]
    while starts[-1] + window_frames * stride < n_samples:
        starts.append(starts[-1] + hop * stride)
    last = len(starts) - 1
    return [Window(s, min(s + window_frames * stride, n_samples), 0 if k == 0 else half,
                   None if k == last else half + hop)
            for k, s in enumerate(starts)]


def stitch(windows: Sequence[Window], logps: Sequence[np.ndarray]) -> np.ndarray:
    """The input's log-posteriors from its windows' (same order)."""
    parts = []
    for k, (w, logp) in enumerate(zip(windows, logps)):
        end = len(logp) if w.keep_to is None else w.keep_to
        if end > len(logp) or w.keep_from > len(logp):
            raise RuntimeError(f"the model gave {len(logp)} frames for window {k} "
                               f"({w.end - w.start} samples): fewer than the {end} the plan "
                               "keeps; the frame shift measured on it does not hold")
        parts.append(logp[w.keep_from:end])
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def segment_bounds(pause: np.ndarray, min_pause: int, max_frames: int) -> list[tuple[int, int]]:
    """Frames [start, end) of each segment of an input whose frames `pause` marks (True: the
    model's best label is the blank or the word break). Up to max_frames: one segment; else
    cut in the middle of every run of at least min_pause such frames, then any segment still
    longer than max_frames in the middle of its longest run (at max_frames if it has none)."""
    n = len(pause)
    if n <= max_frames:
        return [(0, n)]
    cuts = [(a + b) // 2 for a, b in _runs(pause) if b - a >= min_pause and 0 < a and b < n]
    bounds = list(zip([0, *cuts], [*cuts, n]))
    out: list[tuple[int, int]] = []
    while bounds:
        a, b = bounds.pop(0)
        if b - a <= max_frames:
            out.append((a, b))
            continue
        runs = [(s + a, e + a) for s, e in _runs(pause[a:b]) if s > 0 and e < b - a]
        if runs:
            s, e = max(runs, key=lambda r: (r[1] - r[0], -r[0]))
            cut = (s + e) // 2
        else:
            cut = a + max_frames
        bounds[:0] = [(a, cut), (cut, b)]
    return out
