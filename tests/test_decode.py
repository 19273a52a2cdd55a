"""CTC decoding: greedy and prefix beam search on hand-made posteriors, against brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from cvasr.decode import CTCDecoder

TOKENS = ["<blank>", "<unk>", "<space>", "ক", "খ", "<sos/eos>"]


def decoder() -> CTCDecoder:
    """A decoder without a model: only the search over given posteriors is under test."""
    d = object.__new__(CTCDecoder)
    d.token_list, d.blank, d.sentencepiece = TOKENS, 0, None
    return d


def collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    out, prev = [], None
    for i in path:
        if i != prev and i != 0:
            out.append(i)
        prev = i
    return tuple(out)


def brute_force(logp: np.ndarray) -> tuple[tuple[int, ...], float]:
    """The labelling with the largest total probability, summed over every path."""
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(logp.shape[1]), repeat=logp.shape[0]):
        lp = float(sum(logp[t, c] for t, c in enumerate(path)))
        key = collapse(path)
        totals[key] = float(np.logaddexp(totals.get(key, -math.inf), lp))
    return max(totals.items(), key=lambda kv: kv[1])


def test_greedy_collapses_repeats_and_blanks() -> None:
    ids = [3, 3, 0, 3, 2, 4, 4, 0]
    logp = torch.full((len(ids), len(TOKENS)), -10.0)
    for t, i in enumerate(ids):
        logp[t, i] = -0.01
    hyp = decoder().greedy(logp)
    assert hyp.tokens == ["ক", "ক", "<space>", "খ"]
    assert hyp.text == "কক খ"
    assert hyp.score == pytest.approx(-0.08)


@pytest.mark.parametrize("seed", range(12))
def test_prefix_beam_search_finds_the_most_probable_labelling(seed: int) -> None:
    rng = np.random.default_rng(seed)
    vocab = 4  # blank, <unk>, <space>, ক: small enough to enumerate every path
    logits = rng.normal(size=(5, vocab)) * 2
    logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    best, best_lp = brute_force(logp)
    hyp = decoder().beam_search(torch.from_numpy(logp).float(), beam=64)
    assert tuple(TOKENS.index(t) for t in hyp.tokens) == best
    assert hyp.score == pytest.approx(best_lp, abs=1e-4)


def test_beam_beats_greedy_where_paths_add_up() -> None:
    # Frame-wise the best path is blank-blank ("" at 0.36), but "ক" collects three paths
    # (ক-, -ক, কক) worth 0.24 + 0.24 + 0.16 = 0.64.
    p = np.array([[0.6, 0.0, 0.0, 0.4], [0.6, 0.0, 0.0, 0.4]]) + 1e-12
    logp = torch.from_numpy(np.log(p / p.sum(axis=1, keepdims=True))).float()
    d = decoder()
    assert d.greedy(logp).text == ""
    hyp = d.beam_search(logp, beam=4)
    assert hyp.text == "ক" and math.exp(hyp.score) == pytest.approx(0.64, abs=1e-6)


def test_collapse_and_join() -> None:
    from cvasr.decode import collapse_ctc, join_tokens

    assert collapse_ctc([3, 3, 0, 3, 4, 4, -1, -1]) == [3, 3, 4]
    assert join_tokens(["ক", "ক", "<space>", "খ"]) == "কক খ"
    assert join_tokens(["\u2581কক", "\u2581খ"]) == "কক খ"
