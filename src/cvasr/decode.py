"""Batched CTC decoding of a trained espnet2 model: greedy and prefix beam search.

Utterances are decoded in batches sorted by length (little padding), on the GPU when there is
one. The model takes audio exactly as training gave it: 16 kHz mono int16 samples (the dump's
format), so `transcribe` converts any input file the way stage 2 does.
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


def collapse_ctc(ids: Sequence[int], blank: int = 0) -> list[int]:
    """A CTC path's labelling: repeats merged, then blanks (and negative padding ids) dropped."""
    out, previous = [], None
    for i in ids:
        if i != previous and i != blank and i >= 0:
            out.append(i)
        previous = i
    return out


def join_tokens(tokens: Sequence[str]) -> str:
    """Characters or sentencepiece pieces to text: `<space>` and `▁` mark word breaks."""
    text = "".join(" " if t == "<space>" else t for t in tokens).replace("\u2581", " ")
    return " ".join(text.split())


@dataclass
class Hypothesis:
    text: str
    score: float  # log-probability of the chosen labelling (greedy: of the best path)
    tokens: list[str]


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

    def _text(self, ids: Sequence[int]) -> tuple[str, list[str]]:
        tokens = [self.token_list[i] for i in ids]
        if self.sentencepiece is not None:
            return self.sentencepiece.decode_pieces(tokens), tokens
        return join_tokens(tokens), tokens

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
        text, tokens = self._text(collapse_ctc(ids.tolist(), self.blank))
        return Hypothesis(text, float(best.sum()), tokens)

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
        text, tokens = self._text(prefix)
        return Hypothesis(text, float(np.logaddexp(pb, pnb)), tokens)

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
    """Decode a dumped data dir into out_dir/text (Kaldi style) and out_dir/score."""
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
    return out_dir / "text"


def transcribe(decoder: CTCDecoder, files: Sequence[Path], beam: int = 1) -> list[str]:
    """Text of each audio file (mp3/wav/flac, any rate and channel count)."""
    from cvasr.audio import load_16k

    return [h.text for h in decoder.decode([load_16k(Path(f)) for f in files], beam=beam)]
