"""CTC prefix beam search fused with a word n-gram LM, open vocabulary.

The search is ctc-beam-decoder's (C++ with KenLM inside; pyctcdecode's search and scoring, chosen
over pyctcdecode itself, torchaudio's flashlight decoder and others by `bench/decode_lm.py`):
prefixes are extended token by token, the LM scores each word when it is complete
(`lm_weight` x its log10 probability, plus `word_bonus`), and a word the LM has never seen is
still a candidate, charged `unk_offset` instead of being impossible, so out-of-vocabulary words
(which Common Voice test sets are full of) can be output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cvasr.lm.ngram import BINARY, LMError, read_unigrams

#: the search's own pruning, pyctcdecode's defaults
BEAM_PRUNE_LOGP = -10.0
TOKEN_MIN_LOGP = -5.0


def search_labels(token_list: Sequence[str]) -> list[str]:
    """The token list as the search spells it: the blank as "", `<space>` as " " (the word
    boundary), everything else as itself (BPE pieces keep their ▁)."""
    return ["" if t == "<blank>" else " " if t == "<space>" else t for t in token_list]


class LMSearch:
    """One LM, one weight setting: `text(logp)` for one utterance's CTC log-posteriors."""

    def __init__(self, token_list: Sequence[str], lm_dir: Path, lm_weight: float,
                 word_bonus: float, beam: int, unk_offset: float) -> None:
        from ctc_beam_decoder import build_ctcdecoder

        lm_dir = Path(lm_dir)
        if not (lm_dir / BINARY).is_file():
            raise LMError(f"no LM in {lm_dir} (no {BINARY}): run stage 3 with the LM on, or "
                          "decode without it (--no-lm)")
        if list(token_list[:1]) != ["<blank>"]:
            raise ValueError("the token list must start with <blank> (CTC's blank, id 0)")
        self.beam = beam
        self.decoder = build_ctcdecoder(search_labels(token_list),
                                        kenlm_model_path=str(lm_dir / BINARY),
                                        unigrams=read_unigrams(lm_dir), alpha=lm_weight,
                                        beta=word_bonus, unk_score_offset=unk_offset)

    def best(self, logp: np.ndarray) -> tuple[str, float]:
        """The best text and its combined (acoustic + LM) score. ctypes lets other threads run
        while the search does, so threads decode utterances in parallel."""
        beams = self.decoder.decode_beams(np.asarray(logp, dtype=np.float32),
                                          beam_width=self.beam, beam_prune_logp=BEAM_PRUNE_LOGP,
                                          token_min_logp=TOKEN_MIN_LOGP, prune_history=True)
        if not beams:
            return "", float("-inf")
        text, _, _, _, combined = beams[0]
        return " ".join(text.split()), float(combined)
