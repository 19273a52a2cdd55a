"""Long inputs: the model's windows and the search's segments (cvasr.decoding.chunks), against
oracles: a local "model" whose frames depend on their own samples only, brute force, and the
whole input searched at once."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from cvasr.decoding.chunks import Window, plan_windows, segment_bounds, stitch
from cvasr.decoding.ctc import ctc_best_alignment, join_tokens
from cvasr.decoding.decoder import Search, Tokens
from cvasr.decoding.options import DecodingOptions

TOKENS = ["<blank>", "<unk>", "<space>", "ক", "খ", "গ", "<sos/eos>"]


@pytest.mark.parametrize("n, stride, window, overlap", [
    (10_000, 1, 1000, 200), (16000 * 95 + 7, 320, 16000 * 20, 16000 * 4),
    (16000 * 61, 640, 16000 * 20, 16000 * 4), (5000, 7, 700, 70), (1001, 1, 1000, 10)])
def test_windows_cover_every_frame_once_with_context(n: int, stride: int, window: int,
                                                     overlap: int) -> None:
    windows = plan_windows(n, stride, window, overlap)
    half = (overlap // stride) // 2
    assert windows[0].start == 0 and windows[-1].end == n
    kept = []  # (first, end) of the kept frames, in the input's frame numbering
    for w in windows:
        assert w.start % stride == 0 and w.end - w.start <= window
        first = w.start // stride + w.keep_from
        end = (w.start // stride + w.keep_to) if w.keep_to is not None else None
        kept.append((first, end))
        if w is not windows[0]:  # every kept frame has half the overlap before it in its window
            assert w.keep_from == half
        if w is not windows[-1]:  # ... and after it
            assert (w.end - w.start) // stride - w.keep_to >= half
    assert kept[0][0] == 0 and kept[-1][1] is None
    assert all(a[1] == b[0] for a, b in zip(kept, kept[1:]))  # end to end: no gap, no overlap
    assert len(windows) == 1 or windows[-1].end - windows[-1].start > overlap // stride * stride


def test_a_short_input_is_one_window_and_bad_plans_are_refused() -> None:
    assert plan_windows(999, 10, 1000, 100) == [Window(0, 999, 0, None)]
    with pytest.raises(ValueError, match="overlap must be at least two frames"):
        plan_windows(10_000, 100, 1000, 100)  # an overlap of one frame
    with pytest.raises(ValueError, match="shorter than the window"):
        plan_windows(10_000, 10, 1000, 1000)


def local_model(samples: np.ndarray, stride: int, vocab: int) -> np.ndarray:
    """A stand-in for a model whose frame t depends only on samples [t*stride, t*stride + 3*stride)
    (a receptive field wider than the shift, as convolutions have), with the last two frames of
    any input lost at its edge, as a convolution without padding loses them."""
    n_frames = len(samples) // stride - 2
    feats = np.stack([samples[t * stride:(t + 3) * stride].reshape(3, stride).sum(axis=1)
                      for t in range(n_frames)])
    logits = np.sin(feats[:, :1] * np.arange(1, vocab + 1)) + np.cos(feats[:, 1:2]) + feats[:, 2:]
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


@pytest.mark.parametrize("stride", [1, 4, 16])
def test_stitched_windows_give_the_whole_inputs_frames(stride: int) -> None:
    rng = np.random.default_rng(stride)
    samples = rng.normal(size=stride * 2000)
    whole = local_model(samples, stride, len(TOKENS))
    windows = plan_windows(len(samples), stride, 300 * stride, 40 * stride)
    assert len(windows) > 5
    stitched = stitch(windows, [local_model(samples[w.start:w.end], stride, len(TOKENS))
                                for w in windows])
    np.testing.assert_array_equal(stitched, whole)


def test_stitch_refuses_a_window_with_fewer_frames_than_planned() -> None:
    windows = plan_windows(10_000, 1, 1000, 100)
    logps = [np.zeros((w.end - w.start, 3)) for w in windows]
    logps[1] = logps[1][:500]
    with pytest.raises(RuntimeError, match="the model gave 500 frames for window 1"):
        stitch(windows, logps)


def test_segments_are_cut_in_pauses_and_no_longer_than_the_limit() -> None:
    rng = np.random.default_rng(0)
    pause = rng.random(5000) < 0.6
    pause[999], pause[1000:1030], pause[1030] = False, True, False  # one long pause
    bounds = segment_bounds(pause, min_pause=25, max_frames=400)
    assert bounds[0][0] == 0 and bounds[-1][1] == 5000
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(b - a <= 400 for a, b in bounds)
    assert all(pause[a] for a, _ in bounds[1:])  # every cut is in a pause frame
    assert 1015 in [a for a, _ in bounds]  # the long pause is cut in its middle
    assert segment_bounds(pause[:400], 25, 400) == [(0, 400)]  # short: whole
    assert segment_bounds(np.zeros(1000, dtype=bool), 25, 400) == [(0, 400), (400, 800),
                                                                   (800, 1000)]


def speech(rng: np.random.Generator, frames: list[int]) -> np.ndarray:
    """Near-certain log-posteriors of a frame-wise label sequence."""
    logp = np.full((len(frames), len(TOKENS)), math.log(0.02 / (len(TOKENS) - 1)))
    logp[np.arange(len(frames)), frames] = math.log(0.98)
    return logp + rng.normal(0, 0.01, logp.shape)


def test_a_long_input_is_searched_in_segments_that_change_no_label() -> None:
    """Greedy search of the segments gives the whole input's labels, with a word break at each
    pause; segments carry the frames of their first and last token."""
    rng = np.random.default_rng(1)
    words = [[3, 3, 0, 4], [5, 0, 5, 2, 3], [4, 4, 4], [3, 0, 0, 5, 2, 4]]
    frames: list[int] = [0] * 7
    starts = []
    for k in range(60):
        starts.append(len(frames))
        frames += words[k % 4] + [0] * (3 if k % 5 else 30)  # a pause after every fifth word
    logp = speech(rng, frames)
    options = DecodingOptions(window=2.0, window_overlap=0.5)  # 100 frames of 0.02 s
    whole = Search(Tokens(TOKENS), options)(logp)
    cut = Search(Tokens(TOKENS), options, frame_shift=0.02)(logp)
    assert len(cut.segments) == 13  # 12 pauses (after words 0, 5, ..., 55) cut 13 segments
    assert cut.text.split() == " ".join(
        seg.text for seg in cut.segments).split()
    assert cut.text.replace(" ", "") == whole.text.replace(" ", "")
    assert join_tokens(cut.tokens) == cut.text and len(cut.tokens) == len(cut.token_scores)
    for seg in cut.segments:  # a segment starts on a word's first frame, ends after a word
        assert seg.start in starts and frames[seg.end - 1] != 0 and frames[seg.end] == 0
    assert cut.score == pytest.approx(whole.score, abs=1e-3)


def collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(c for i, c in enumerate(path) if c != 0 and (i == 0 or path[i - 1] != c))


@pytest.mark.parametrize("seed, ids", [(0, (3, 4)), (1, (3, 3)), (2, (5,)), (3, (4, 3, 4))])
def test_best_alignment_frames_match_brute_force(seed: int, ids: tuple[int, ...]) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(6, 6)) * 2
    logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    best = max((p for p in itertools.product(range(6), repeat=6) if collapse(p) == ids),
               key=lambda p: sum(logp[t, c] for t, c in enumerate(p)))
    spans, k = [], -1
    for t, c in enumerate(best):
        if c != 0 and (t == 0 or best[t - 1] != c):
            k += 1
            spans.append([t, t + 1])
        elif c != 0:
            spans[k][1] = t + 1
    assert ctc_best_alignment(logp, ids)[1] == [tuple(s) for s in spans]
