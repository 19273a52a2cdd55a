"""CTC label sequences: collapsing a path, joining tokens to text, and the best alignment of a
labelling. Pure functions over ids and log-posteriors, shared by the model's validation WER and
by decoding; no model, no espnet2."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np


def ctc_runs(ids: Sequence[int], blank: int = 0) -> list[tuple[int, int, int]]:
    """The tokens a CTC path emits, as (label, first frame, end frame) of each one's run:
    repeats merged, then blanks (and negative padding ids) dropped."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    for t in range(1, len(ids) + 1):
        if t == len(ids) or ids[t] != ids[start]:
            if ids[start] != blank and ids[start] >= 0:
                runs.append((ids[start], start, t))
            start = t
    return runs


def collapse_ctc(ids: Sequence[int], blank: int = 0) -> list[int]:
    """A CTC path's labelling: repeats merged, then blanks (and negative padding ids) dropped."""
    return [label for label, _, _ in ctc_runs(ids, blank)]


def join_tokens(tokens: Sequence[str]) -> str:
    """Characters or sentencepiece pieces to text: `<space>` and `▁` mark word breaks."""
    text = "".join(" " if t == "<space>" else t for t in tokens).replace("\u2581", " ")
    return " ".join(text.split())


def ctc_viterbi_token_scores(logp: np.ndarray, ids: Sequence[int], blank: int = 0) -> list[float]:
    """Each token's log-probability in the best (Viterbi) CTC alignment of the labelling `ids`.

    logp is (frames, vocab) log-posteriors. The alignment uses the standard CTC topology (blanks
    optional between labels, mandatory between two equal consecutive ones); a token's score is
    the sum of logp over the frames aligned to it, blank frames count for no token. Defined on
    the final labelling alone, so greedy and beam search hypotheses get comparable scores.
    """
    return ctc_best_alignment(logp, ids, blank)[0]


def ctc_best_alignment(logp: np.ndarray, ids: Sequence[int], blank: int = 0
                       ) -> tuple[list[float], list[tuple[int, int]]]:
    """The best (Viterbi) CTC alignment of the labelling `ids`: each token's score (see
    ctc_viterbi_token_scores) and the frames [first, end) aligned to it (its time)."""
    logp = np.asarray(logp, dtype=np.float64)
    ids = [int(i) for i in ids]
    if blank in ids:
        raise ValueError(f"a CTC labelling cannot hold the blank ({blank}): {ids}")
    n_frames = logp.shape[0]
    needed = len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))
    if needed > n_frames:
        raise ValueError(f"a labelling of {len(ids)} tokens ({needed - len(ids)} repeat(s) that "
                         f"need a blank in between) needs {needed} frames; logp has {n_frames}")
    if not ids:
        return [], []
    # States: blank, ids[0], blank, ids[1], ..., blank. Odd states are tokens.
    states = np.full(2 * len(ids) + 1, blank)
    states[1::2] = ids
    n_states = len(states)
    # s-2 -> s skips a blank: only into a token that differs from the token before that blank.
    can_skip = np.zeros(n_states, dtype=bool)
    can_skip[3::2] = np.array(ids[1:]) != np.array(ids[:-1])
    best = np.full(n_states, -np.inf)
    best[:2] = logp[0, states[:2]]
    step = np.zeros((n_frames, n_states), dtype=np.int8)  # how far back each state came from
    for t in range(1, n_frames):
        came = np.full((3, n_states), -np.inf)  # from s, s-1, s-2
        came[0] = best
        came[1, 1:] = best[:-1]
        came[2, 2:] = np.where(can_skip[2:], best[:-2], -np.inf)
        step[t] = came.argmax(axis=0)
        best = came.max(axis=0) + logp[t, states]
    # The path ends in the last token or in the blank after it.
    state = n_states - 1 if best[-1] >= best[-2] else n_states - 2
    scores = np.zeros(len(ids))
    first = np.zeros(len(ids), dtype=np.int64)
    last = np.zeros(len(ids), dtype=np.int64)
    for t in range(n_frames - 1, -1, -1):
        if state % 2:
            k = state // 2
            scores[k] += logp[t, states[state]]
            if not last[k]:
                last[k] = t + 1
            first[k] = t
        state -= int(step[t, state])
    return scores.tolist(), list(zip(first.tolist(), last.tolist()))


def greedy_search(logp: np.ndarray, blank: int = 0
                  ) -> tuple[list[int], float, list[float], list[tuple[int, int]]]:
    """The best path's labelling, its log-probability, each token's score (the log-probs of
    its run's frames: the greedy path is the best alignment of the labelling it collapses to, so
    this is what ctc_viterbi_token_scores gives for it) and each token's frames [first, end)."""
    logp = np.asarray(logp)
    ids = logp.argmax(axis=-1)
    best = logp[np.arange(len(ids)), ids].astype(np.float64)
    runs = ctc_runs(ids.tolist(), blank)
    return ([label for label, _, _ in runs], float(best.sum()),
            [float(best[a:b].sum()) for _, a, b in runs], [(a, b) for _, a, b in runs])


def prefix_beam_search(logp: np.ndarray, beam: int = 10, blank: int = 0
                       ) -> tuple[list[int], float]:
    """CTC prefix beam search: labellings scored by summing over all their alignments; the best
    one and its log-probability."""
    neg_inf = -math.inf
    # prefix -> (log P ending in blank, log P ending in its last label)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, neg_inf)}
    for frame in np.asarray(logp):
        top = np.argsort(frame)[::-1][:beam]
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [neg_inf, neg_inf])
        for prefix, (pb, pnb) in beams.items():
            total = np.logaddexp(pb, pnb)
            for c in top:
                p = float(frame[c])
                if c == blank:
                    entry = nxt[prefix]
                    entry[0] = np.logaddexp(entry[0], total + p)
                    continue
                extended = prefix + (int(c),)
                entry = nxt[extended]
                if prefix and prefix[-1] == c:
                    # a repeat needs a blank in between; otherwise it stays the same prefix
                    entry[1] = np.logaddexp(entry[1], pb + p)
                    same = nxt[prefix]
                    same[1] = np.logaddexp(same[1], pnb + p)
                else:
                    entry[1] = np.logaddexp(entry[1], total + p)
        beams = dict(sorted(((k, (v[0], v[1])) for k, v in nxt.items()),
                            key=lambda kv: -np.logaddexp(*kv[1]))[:beam])
    prefix, (pb, pnb) = max(beams.items(), key=lambda kv: np.logaddexp(*kv[1]))
    return list(prefix), float(np.logaddexp(pb, pnb))
