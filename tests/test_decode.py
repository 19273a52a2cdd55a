"""CTC decoding: greedy and prefix beam search on hand-made posteriors, against brute force;
per-token scores of the best alignment; the tables a decode dir holds."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cvasr.decoding.ctc import ctc_viterbi_token_scores
from cvasr.decoding.decoder import CTCDecoder, Hypothesis, Search, Tokens
from cvasr.decoding.options import DecodingOptions

TOKENS = ["<blank>", "<unk>", "<space>", "ক", "খ", "<sos/eos>"]


def greedy(logp: torch.Tensor | np.ndarray) -> Hypothesis:
    return Search(Tokens(TOKENS), DecodingOptions(beam_size=1))(np.asarray(logp))


def beam_search(logp: torch.Tensor | np.ndarray, beam: int) -> Hypothesis:
    return Search(Tokens(TOKENS), DecodingOptions(beam_size=beam))(np.asarray(logp))


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


def random_logp(rng: np.random.Generator, frames: int, vocab: int) -> np.ndarray:
    logits = rng.normal(size=(frames, vocab)) * 2
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def brute_force_token_scores(logp: np.ndarray, ids: tuple[int, ...]) -> list[float]:
    """Token scores of the best of every path whose labelling is ids, by enumeration."""
    best, best_lp = None, -math.inf
    for path in itertools.product(range(logp.shape[1]), repeat=logp.shape[0]):
        if collapse(path) == ids:
            lp = float(sum(logp[t, c] for t, c in enumerate(path)))
            if lp > best_lp:
                best, best_lp = path, lp
    assert best is not None
    scores, k, prev = [0.0] * len(ids), -1, None
    for t, c in enumerate(best):
        if c != 0 and c != prev:
            k += 1
        if c != 0:
            scores[k] += float(logp[t, c])
        prev = c
    return scores


def test_token_scores_by_hand_with_a_repeated_label() -> None:
    # [3, 3] must have a blank between its two 3s. Of the five paths that fit 4 frames, 3 3 - 3
    # is the best (.7*.6*.3*.7); the frame-wise best, 3 3 3 3, is only "3".
    p = np.array([[0.1, 0.1, 0.1, 0.7],
                  [0.2, 0.1, 0.1, 0.6],
                  [0.3, 0.1, 0.1, 0.5],
                  [0.1, 0.1, 0.1, 0.7]])
    scores = ctc_viterbi_token_scores(np.log(p), [3, 3], blank=0)
    assert scores == pytest.approx([math.log(0.7 * 0.6), math.log(0.7)])
    assert ctc_viterbi_token_scores(np.log(p), [3], blank=0) == pytest.approx(
        [math.log(0.7 * 0.6 * 0.5 * 0.7)])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ids", [(1,), (1, 2), (3, 3), (2, 1, 2), (1, 1, 1), (3, 2, 3, 1, 2, 1)])
def test_token_scores_match_the_best_path_by_brute_force(seed: int, ids: tuple[int, ...]) -> None:
    logp = random_logp(np.random.default_rng(seed), frames=6, vocab=4)
    assert ctc_viterbi_token_scores(logp, ids, blank=0) == pytest.approx(
        brute_force_token_scores(logp, ids), abs=1e-9)


def test_token_scores_of_empty_and_impossible_labellings() -> None:
    logp = random_logp(np.random.default_rng(0), frames=4, vocab=4)
    assert ctc_viterbi_token_scores(logp, [], blank=0) == []
    assert ctc_viterbi_token_scores(logp[:0], [], blank=0) == []
    # Three 3s need two blanks between them: 5 frames.
    with pytest.raises(ValueError, match="needs 5 frames; logp has 4"):
        ctc_viterbi_token_scores(logp, [3, 3, 3], blank=0)
    with pytest.raises(ValueError, match="needs 1 frames; logp has 0"):
        ctc_viterbi_token_scores(logp[:0], [1], blank=0)
    with pytest.raises(ValueError, match="cannot hold the blank"):
        ctc_viterbi_token_scores(logp, [1, 0, 2], blank=0)


@pytest.mark.parametrize("seed", range(8))
def test_greedy_token_scores_are_the_greedy_path_without_its_blanks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Long enough for a labelling of over 127 tokens (more alignment states than an int8 holds).
    logp = random_logp(rng, frames=400, vocab=len(TOKENS))
    logp[rng.random(400) < 0.3, 0] = 0.0  # plenty of blank frames
    logp = torch.from_numpy(logp - np.logaddexp.reduce(logp, axis=1, keepdims=True)).float()
    hyp = greedy(logp)
    best, path = logp.max(dim=-1)
    blank_frames = float(best[path == 0].sum())
    assert 127 < len(hyp.token_scores) == len(hyp.tokens)
    assert sum(hyp.token_scores) == pytest.approx(hyp.score - blank_frames, abs=1e-4)
    # read off the greedy path, they are the Viterbi scores of its labelling
    ids = [TOKENS.index(t) for t in hyp.tokens]
    assert hyp.token_scores == pytest.approx(
        ctc_viterbi_token_scores(logp.numpy(), ids, blank=0), abs=1e-4)


def test_greedy_collapses_repeats_and_blanks() -> None:
    ids = [3, 3, 0, 3, 2, 4, 4, 0]
    logp = torch.full((len(ids), len(TOKENS)), -10.0)
    for t, i in enumerate(ids):
        logp[t, i] = -0.01
    hyp = greedy(logp)
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
    hyp = beam_search(torch.from_numpy(logp).float(), beam=64)
    assert tuple(TOKENS.index(t) for t in hyp.tokens) == best
    assert hyp.score == pytest.approx(best_lp, abs=1e-4)
    assert hyp.token_scores == pytest.approx(brute_force_token_scores(logp, best), abs=1e-5)


def test_beam_beats_greedy_where_paths_add_up() -> None:
    # Frame-wise the best path is blank-blank ("" at 0.36), but "ক" collects three paths
    # (ক-, -ক, কক) worth 0.24 + 0.24 + 0.16 = 0.64.
    p = np.array([[0.6, 0.0, 0.0, 0.4], [0.6, 0.0, 0.0, 0.4]]) + 1e-12
    logp = torch.from_numpy(np.log(p / p.sum(axis=1, keepdims=True))).float()
    assert greedy(logp).text == ""
    hyp = beam_search(logp, beam=4)
    assert hyp.text == "ক" and math.exp(hyp.score) == pytest.approx(0.64, abs=1e-6)


def test_collapse_and_join() -> None:
    from cvasr.decoding.ctc import collapse_ctc, join_tokens

    assert collapse_ctc([3, 3, 0, 3, 4, 4, -1, -1]) == [3, 3, 4]
    assert join_tokens(["ক", "ক", "<space>", "খ"]) == "কক খ"
    assert join_tokens(["\u2581কক", "\u2581খ"]) == "কক খ"


def test_decode_data_dir_writes_token_and_token_score_tables(tmp_path: Path) -> None:
    import kaldiio

    from cvasr.data.kaldi import read_table
    from cvasr.decoding.decoder import decode_data_dir

    # Each "waveform" is its own frame-wise labels; the stand-in model makes them near certain.
    frames = {"u2": [3, 3, 0, 2, 2, 4, 0, 3], "u1": [0, 0, 0], "u3": [4, 0, 4, 4]}
    data = tmp_path / "data"
    data.mkdir()
    kaldiio.save_ark(str(data / "wav.ark"),
                     {u: (16000, np.array(f, dtype=np.int16)) for u, f in frames.items()},
                     scp=str(data / "wav.scp"))

    def log_probs(wavs: list[np.ndarray]) -> list[torch.Tensor]:
        out = []
        for w in wavs:
            logp = torch.full((len(w), len(TOKENS)), math.log(0.01 / (len(TOKENS) - 1)))
            logp[torch.arange(len(w)), torch.tensor(w.tolist())] = math.log(0.99)
            out.append(logp)
        return out

    d = object.__new__(CTCDecoder)  # a decoder whose "model" is log_probs above
    d.tokens = Tokens(TOKENS)
    d.log_probs = log_probs  # type: ignore[method-assign]
    d.frame_shift_samples = 1  # one frame a "sample"
    out = tmp_path / "decode"
    decode_data_dir(d, data, out, DecodingOptions(batch_size=2), save_logp=True)
    lines = {name: (out / name).read_text(encoding="utf-8").splitlines()
             for name in ("text", "score", "token", "token_score")}
    assert [line.split(" ")[0] for line in lines["token"]] == ["u1", "u2", "u3"]
    assert [line.split(" ")[0] for line in lines["token_score"]] == ["u1", "u2", "u3"]
    assert lines["token"] == ["u1", "u2 ক <space> খ ক", "u3 খ খ"]
    assert read_table(out / "text") == {"u1": "", "u2": "ক খক", "u3": "খখ"}
    per_token = {line.split(" ")[0]: [float(x) for x in line.split(" ")[1:]]
                 for line in lines["token_score"]}
    assert per_token == {"u1": [], "u2": pytest.approx([2 * math.log(0.99), 2 * math.log(0.99),
                                                        math.log(0.99), math.log(0.99)], abs=1e-4),
                         "u3": pytest.approx([math.log(0.99), 2 * math.log(0.99)], abs=1e-4)}
    assert all(len(t.split(" ")) == len(s.split(" "))
               for t, s in zip(lines["token"], lines["token_score"]))
    # the kept log-posteriors decode to the same text without the model
    from cvasr.decoding.decoder import decode_log_probs

    again = decode_log_probs(Tokens(TOKENS), out / "logp.scp", tmp_path / "again",
                             DecodingOptions(beam_size=4))
    assert read_table(again) == read_table(out / "text")
