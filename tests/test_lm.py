"""The word n-gram LM: its text (dev and test sentences never in it), KenLM's build, and the
search that fuses it with CTC: it decides where the acoustics cannot, and still spells words it
has never seen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cvasr.cli import main
from cvasr.decoding.decoder import Search, Tokens
from cvasr.decoding.options import DecodingOptions, read_yaml, recorded, write_record
from cvasr.decoding.tune import tune_lm
from cvasr.lm.ngram import EvalSentences, build_lm, read_unigrams
from cvasr.text.normalize import get_normalizer

TOKENS = ["<blank>", "<unk>", "<space>", "a", "b", "c", "d", "<sos/eos>"]
ID = {t: i for i, t in enumerate(TOKENS)}


def kaldi_text(path: Path, sentences: list[str]) -> Path:
    path.write_text("".join(f"u{i:03d} {s}\n" for i, s in enumerate(sentences)), encoding="utf-8")
    return path


def emissions(frames: list[dict[str, float]]) -> np.ndarray:
    """Log-posteriors as a trained CTC model gives them: each frame's listed tokens share the
    probability in the proportions given, every other token gets 1e-6."""
    out = np.full((len(frames), len(TOKENS)), np.log(1e-6), dtype=np.float32)
    for t, probs in enumerate(frames):
        mass = 1.0 - 1e-6 * (len(TOKENS) - len(probs))
        scale = mass / sum(probs.values())
        for token, p in probs.items():
            out[t, ID[token]] = np.log(p * scale)
    return out


def spell(text: str, blank_between: bool = True) -> list[dict[str, float]]:
    """Frames that spell `text` clearly, a blank after each character."""
    frames = []
    for ch in text:
        frames.append({"<space>" if ch == " " else ch: 0.9})
        if blank_between:
            frames.append({"<blank>": 0.9})
    return frames


def test_eval_sentence_matching() -> None:
    evals = EvalSentences(["ab ca", "d"])
    assert evals.match("ab ca") == "exact"
    assert evals.match("dd ab ca bb") == "contains"
    assert evals.match("x d y") == "contains"
    assert evals.match("ab cab") is None  # whole words only
    assert evals.match("dab ca") is None
    assert evals.match("") is None


def test_dev_and_test_sentences_never_reach_the_lm(tmp_path: Path) -> None:
    train = kaldi_text(tmp_path / "train", ["ab ab ca", "ca ab", "ab ca dd", "dd ca"])
    dev = kaldi_text(tmp_path / "dev", ["ab ca dd"])
    test = kaldi_text(tmp_path / "test", ["ca ca", "bd"])
    extra = tmp_path / "extra.txt"
    extra.write_text("Ab, CA!\n“ca ca” said the bd.\n\n...\nDD ab\n", encoding="utf-8")
    report = build_lm(tmp_path / "lm", [train], [dev, test], [extra], order=3,
                      normalize=get_normalizer("xx"))
    text = (tmp_path / "lm" / "text").read_text(encoding="utf-8").splitlines()
    # the train line equal to a dev sentence and the extra line holding a test one are gone
    assert text == ["ab ab ca", "ca ab", "dd ca", "ab ca", "dd ab"]
    t = report.text
    assert (t.train_lines, t.extra_lines, t.extra_empty) == (4, 5, 2)
    assert (t.removed_exact, t.removed_containing, t.kept_lines) == (1, 1, 5)
    saved = json.loads((tmp_path / "lm" / "report.json").read_text())
    assert saved["text"]["removed"] == 2 and saved["order"] == 3
    evals = EvalSentences(["ab ca dd", "ca ca", "bd"])
    assert all(evals.match(line) is None for line in text)
    assert "removed 2 line(s) holding a dev/test sentence" in report.summary()


def test_lm_files_on_a_tiny_text(tmp_path: Path) -> None:
    train = kaldi_text(tmp_path / "train", ["ab ab ca", "ca ab", "dd ca"])
    dev = kaldi_text(tmp_path / "dev", ["zz"])
    report = build_lm(tmp_path / "lm", [train], [dev], order=4)
    lm = tmp_path / "lm"
    arpa = (lm / "lm.arpa").read_text(encoding="utf-8")
    assert arpa.startswith("\n\\data\\\n") or arpa.startswith("\\data\\")
    assert report.ngrams["1"] == 6  # ab ca dd + <s> </s> <unk>
    assert set(report.ngrams) == {"1", "2", "3", "4"}
    assert sorted(read_unigrams(lm)) == ["ab", "ca", "dd"] and report.vocabulary == 3
    assert (lm / "lm.bin").stat().st_size > 0
    assert report.discount_fallback_used  # three lines: no closed-form Kneser-Ney discounts
    assert "-o 4 --discount_fallback" in (lm / "lmplz.log").read_text()


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LM that knows "ab" and "ca" (and "ab ca" together), never "ac" or "cb"."""
    tmp = tmp_path_factory.mktemp("lm")
    train = kaldi_text(tmp / "train", ["ab ca"] * 20 + ["ca ab"] * 10 + ["ab ab ca"] * 5)
    build_lm(tmp / "lm", [train], [kaldi_text(tmp / "dev", ["zz"])], order=3)
    return tmp / "lm"


def ambiguous_ab_ca() -> np.ndarray:
    """"ab ca" where the acoustics favour "ac" for the second letter (0.55 to 0.40)."""
    frames = spell("a") + [{"c": 0.55, "b": 0.40}, {"<blank>": 0.9}] + spell(" ca")
    return emissions(frames)


def options(lm: Path | None, weight: float = 1.0, bonus: float = 0.0) -> DecodingOptions:
    return DecodingOptions(beam_size=10, lm=None if lm is None else str(lm), lm_weight=weight,
                           word_bonus=bonus, lm_beam_size=20)


def test_the_lm_decides_where_the_acoustics_cannot(lm_dir: Path) -> None:
    tokens = Tokens(TOKENS)
    logp = ambiguous_ab_ca()
    assert Search(tokens, options(None)).__call__(logp).text == "ac ca"  # greedy and beam alike
    assert Search(tokens, DecodingOptions()).__call__(logp).text == "ac ca"
    hyp = Search(tokens, options(lm_dir)).__call__(logp)
    assert hyp.text == "ab ca"
    assert hyp.tokens == ["a", "b", "<space>", "c", "a"]
    assert len(hyp.token_scores) == 5 and all(s < 0 for s in hyp.token_scores)
    # weight 0 is CTC alone again
    assert Search(tokens, options(lm_dir, weight=0.0)).__call__(logp).text == "ac ca"


def test_words_the_lm_never_saw_are_still_spelled(lm_dir: Path) -> None:
    """Open vocabulary: clear acoustics for "cb ab" (cb unknown to the LM) give "cb ab"."""
    assert "cb" not in read_unigrams(lm_dir)
    logp = emissions(spell("cb ab"))
    assert Search(Tokens(TOKENS), options(lm_dir)).__call__(logp).text == "cb ab"


def test_tuning_picks_the_weight_that_fixes_dev(lm_dir: Path, tmp_path: Path) -> None:
    logps = {"u1": ambiguous_ab_ca(), "u2": emissions(spell("ca ab"))}
    refs = {"u1": "ab ca", "u2": "ca ab"}
    grid = DecodingOptions(lm=str(lm_dir), lm_beam_size=20, lm_weights=[0.0, 1.0],
                           word_bonuses=[0.0, 1.0])
    chosen, points = tune_lm(Tokens(TOKENS), logps, refs, grid)
    assert [(p.lm_weight, p.word_bonus) for p in points] == [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0),
                                                            (1.0, 1.0)]
    assert (points[0].wer, points[0].cer) == (25.0, 10.0)  # "ac": 1 of 4 words, 1 of 10 chars
    assert chosen.lm_weight == 1.0 and chosen.word_bonus == 0.0  # first of the two perfect ones
    assert min(p.wer for p in points) == 0.0


def test_recorded_decoding_round_trip(lm_dir: Path, tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    chosen = options(lm_dir, weight=0.75, bonus=2.0)
    record = write_record(exp, chosen)
    values = read_yaml(record)
    assert not Path(values["lm"]).is_absolute()  # relative to the experiment
    back = recorded(exp)
    assert Path(back.lm) == lm_dir.resolve() and (back.lm_weight, back.word_bonus) == (0.75, 2.0)
    with pytest.raises(ValueError, match=r"decode.yaml: lm_weight must be a number, got 'high'"):
        DecodingOptions().updated({"lm_weight": "high"}, "decode.yaml")
    with pytest.raises(ValueError, match=r"unknown key\(s\) beam"):
        DecodingOptions().updated({"beam": 3}, "decode.yaml")


def test_make_lm_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = kaldi_text(tmp_path / "train", ["ab ca", "ca ab", "ab ab"])
    dev = kaldi_text(tmp_path / "dev", ["ca ab"])
    assert main(["make-lm", "--train-text", str(train), "--exclude-text", str(dev), "--lang",
                 "as", "--order", "2", "--out", str(tmp_path / "lm")]) == 0
    out = capsys.readouterr().out
    assert "word 2-gram LM: 2 lines (3 train), 4 words, vocabulary 2; removed 1 line(s)" in out
    assert main(["make-lm", "--train-text", str(tmp_path / "none"), "--exclude-text", str(dev),
                 "--lang", "as", "--out", str(tmp_path / "lm2")]) == 1
    assert "LM text input" in capsys.readouterr().err
