"""Batched CTC decoding of a trained espnet2 model: greedy and prefix beam search.

Utterances are decoded in batches sorted by length (little padding), on the GPU when there is
one. The model takes audio exactly as training gave it: 16 kHz mono int16 samples (the dump's
format), so `transcribe` converts any input file the way stage 2 does. Each hypothesis also
carries per-token scores from the best CTC alignment of its labelling, for confidence filtering.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

#: The checkpoints a finished run leaves, best first: the average of the n best by validation
#: CER, the single best, the last epoch.
MODEL_FILES = ("valid.cer_ctc.ave.pth", "valid.cer_ctc.best.pth", "latest.pth")


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
        return []
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
    for t in range(n_frames - 1, -1, -1):
        if state % 2:
            scores[state // 2] += logp[t, states[state]]
        state -= int(step[t, state])
    return scores.tolist()


@dataclass
class Hypothesis:
    text: str
    score: float  # log-probability of the chosen labelling (greedy: of the best path)
    tokens: list[str]
    token_scores: list[float]  # per token: see ctc_viterbi_token_scores


class CTCDecoder:
    """A trained model, its token list, and greedy / prefix-beam CTC decoding over batches."""

    def __init__(self, exp_dir: Path, device: str | None = None, model_file: str | None = None):
        from cvasr.espnet_task import CvasrASRTask

        exp_dir = Path(exp_dir)
        name = model_file or next((m for m in MODEL_FILES if (exp_dir / m).exists()), None)
        if name is None or not (exp_dir / name).exists():
            raise FileNotFoundError(f"no trained model in {exp_dir} (looked for "
                                    f"{', '.join(MODEL_FILES)}): run stage 4 first")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, args = CvasrASRTask.build_model_from_file(exp_dir / "config.yaml", exp_dir / name,
                                                         self.device)
        self.model = model.eval()
        self.model_file = exp_dir / name
        self.token_list: list[str] = list(args.token_list)
        self.blank = 0
        self.sentencepiece = None
        if getattr(args, "token_type", "char") == "bpe" and args.bpemodel:
            import sentencepiece as spm

            self.sentencepiece = spm.SentencePieceProcessor(model_file=str(args.bpemodel))

    def _hypothesis(self, ids: Sequence[int], score: float,
                    token_scores: list[float]) -> Hypothesis:
        tokens = [self.token_list[i] for i in ids]
        if self.sentencepiece is not None:
            text = self.sentencepiece.decode_pieces(tokens)
        else:
            text = join_tokens(tokens)
        return Hypothesis(text, score, tokens, token_scores)

    @torch.no_grad()
    def log_probs(self, wavs: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """CTC log-posteriors (frames, vocab) of each waveform, in input order."""
        lengths = torch.tensor([len(w) for w in wavs])
        batch = torch.zeros(len(wavs), int(lengths.max()))
        for i, w in enumerate(wavs):
            batch[i, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
        # bf16 on GPUs that have it, as in training; CPUs decode in fp32
        bf16 = self.device.startswith("cuda") and torch.cuda.is_bf16_supported()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            enc, enc_lens = self.model.encode(batch.to(self.device), lengths.to(self.device))
        logp = self.model.ctc.log_softmax(enc).float().cpu()
        return [logp[i, : int(enc_lens[i])] for i in range(len(wavs))]

    def greedy(self, logp: torch.Tensor) -> Hypothesis:
        best, ids = logp.max(dim=-1)
        runs = ctc_runs(ids.tolist(), self.blank)
        # the greedy path is the best alignment of the labelling it collapses to, so each token's
        # score (as ctc_viterbi_token_scores defines it) is read off the path: its run's frames
        frame_logp = best.double().numpy()
        return self._hypothesis([label for label, _, _ in runs], float(best.sum()),
                                [float(frame_logp[a:b].sum()) for _, a, b in runs])

    def beam_search(self, logp: torch.Tensor, beam: int = 10) -> Hypothesis:
        """CTC prefix beam search: prefixes scored by summing over all their alignments."""
        neg_inf = -math.inf
        # prefix -> (log P ending in blank, log P ending in its last label)
        beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, neg_inf)}
        for frame in logp.numpy():
            top = np.argsort(frame)[::-1][:beam]
            nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [neg_inf, neg_inf])
            for prefix, (pb, pnb) in beams.items():
                total = np.logaddexp(pb, pnb)
                for c in top:
                    p = float(frame[c])
                    if c == self.blank:
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
        return self._hypothesis(prefix, float(np.logaddexp(pb, pnb)),
                                ctc_viterbi_token_scores(logp.numpy(), prefix, self.blank))

    def decode(self, wavs: Sequence[np.ndarray], batch_size: int = 8,
               beam: int = 1) -> list[Hypothesis]:
        """Hypotheses in input order; batches are formed from length-sorted inputs."""
        order = sorted(range(len(wavs)), key=lambda i: len(wavs[i]))
        results: list[Hypothesis | None] = [None] * len(wavs)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            for i, logp in zip(idx, self.log_probs([wavs[i] for i in idx])):
                results[i] = self.greedy(logp) if beam <= 1 else self.beam_search(logp, beam)
        return [r for r in results if r is not None]


def decode_data_dir(decoder: CTCDecoder, data_dir: Path, out_dir: Path, batch_size: int = 8,
                    beam: int = 1) -> Path:
    """Decode a dumped data dir into Kaldi-style tables in out_dir, one line an utterance:

    text: the hypothesis; score: its log-probability; token: its tokens (char mode writes
    `<space>` for a word break); token_score: one log-probability per token (see
    ctc_viterbi_token_scores), for confidence filtering of pseudo-labels and the like.
    """
    import kaldiio

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    utts, wavs = [], []
    for utt, (rate, samples) in kaldiio.load_scp(str(data_dir / "wav.scp")).items():
        if rate != 16000:
            raise ValueError(f"{data_dir / 'wav.scp'}: {utt} is {rate} Hz, not 16 kHz")
        utts.append(utt)
        wavs.append(samples)
    hyps = decoder.decode(wavs, batch_size=batch_size, beam=beam)
    out_dir.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(utts)), key=lambda i: utts[i])
    (out_dir / "text").write_text("".join(f"{utts[i]} {hyps[i].text}".rstrip() + "\n"
                                          for i in order), encoding="utf-8")
    (out_dir / "score").write_text("".join(f"{utts[i]} {hyps[i].score:.4f}\n" for i in order),
                                   encoding="utf-8")
    (out_dir / "token").write_text("".join(" ".join([utts[i], *hyps[i].tokens]) + "\n"
                                           for i in order), encoding="utf-8")
    (out_dir / "token_score").write_text(
        "".join(" ".join([utts[i], *(f"{s:.4f}" for s in hyps[i].token_scores)]) + "\n"
                for i in order), encoding="utf-8")
    return out_dir / "text"


def transcribe(decoder: CTCDecoder, files: Sequence[Path], beam: int = 1) -> list[str]:
    """Text of each audio file (mp3/wav/flac, any rate and channel count)."""
    from cvasr.audio import load_16k

    return [h.text for h in decoder.decode([load_16k(Path(f)) for f in files], beam=beam)]
