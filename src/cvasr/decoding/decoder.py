"""Batched CTC decoding of a trained espnet2 model: greedy, prefix beam, or beam with a word LM.

Utterances go through the model in batches sorted by length (little padding), on the GPU when
there is one; the model takes audio exactly as training gave it: 16 kHz mono int16 samples (the
dump's format), so `transcribe` converts any input file the way stage 2 does. The search then
runs on each utterance's CTC log-posteriors, which a decode dir can keep (`logp.ark`) so that
stage 5 tunes and applies the LM without running the model again. Each hypothesis carries
per-token scores from the best CTC alignment of its labelling, for confidence filtering.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from cvasr.decoding.ctc import (ctc_viterbi_token_scores, greedy_search, join_tokens,
                                prefix_beam_search)
from cvasr.decoding.options import DecodingOptions

#: The checkpoints a finished run leaves, best first: the average of the n best by validation
#: CER, the single best, the last epoch.
MODEL_FILES = ("valid.cer_ctc.ave.pth", "valid.cer_ctc.best.pth", "latest.pth")
#: the log-posteriors a decode dir keeps (a Kaldi matrix ark and its scp)
LOGP_ARK, LOGP_SCP = "logp.ark", "logp.scp"


@dataclass
class Hypothesis:
    text: str
    score: float  # log-probability of the labelling (greedy: of the best path; LM: combined)
    tokens: list[str]
    token_scores: list[float]  # per token: see ctc_viterbi_token_scores


@dataclass(frozen=True)
class Tokens:
    """An experiment's token list, and how its tokens make text."""

    token_list: list[str]
    bpemodel: str | None = None

    @classmethod
    def of_experiment(cls, exp_dir: Path) -> "Tokens":
        """From the experiment's config.yaml, without building the model."""
        import yaml

        config = Path(exp_dir) / "config.yaml"
        if not config.is_file():
            raise FileNotFoundError(f"no trained model in {exp_dir} (no config.yaml): run "
                                    "stage 4 first")
        conf = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        token_list = conf.get("token_list")
        if isinstance(token_list, str):
            token_list = Path(token_list).read_text(encoding="utf-8").splitlines()
        bpe = conf.get("bpemodel") if conf.get("token_type") == "bpe" else None
        return cls(list(token_list), bpe)

    def text(self, ids: Sequence[int]) -> tuple[str, list[str]]:
        tokens = [self.token_list[i] for i in ids]
        if self.bpemodel:
            return self._sentencepiece().decode_pieces(tokens), tokens
        return join_tokens(tokens), tokens

    def ids(self, text: str) -> list[int]:
        """The labelling that spells `text` (the inverse of `text` for what a search outputs)."""
        index = self._index
        unk = index.get("<unk>", 1)
        if self.bpemodel:
            pieces = self._sentencepiece().encode(text, out_type=str)
        else:
            pieces = ["<space>" if ch == " " else ch for ch in text]
        return [index.get(p, unk) for p in pieces]

    @cached_property
    def _index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.token_list)}

    def _sentencepiece(self):
        return self._spm

    @cached_property
    def _spm(self):
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_file=self.bpemodel)


class Search:
    """One utterance's CTC log-posteriors to a Hypothesis, as the options say."""

    def __init__(self, tokens: Tokens, options: DecodingOptions) -> None:
        from cvasr.decoding.lm_search import LMSearch

        options.check()
        self.tokens, self.options, self.blank = tokens, options, 0
        self.lm = None if options.lm is None else LMSearch(
            tokens.token_list, Path(options.lm), options.lm_weight, options.word_bonus,
            options.lm_beam_size, options.unk_offset)

    def __call__(self, logp: np.ndarray) -> Hypothesis:
        logp = np.asarray(logp, dtype=np.float32)
        if self.lm is not None:
            text, score = self.lm.best(logp)
            ids = self.tokens.ids(text)
            try:
                token_scores = ctc_viterbi_token_scores(logp, ids, self.blank)
            except ValueError:  # a labelling the frames cannot hold: no scores rather than wrong
                token_scores = [float("nan")] * len(ids)
            return Hypothesis(text, score, [self.tokens.token_list[i] for i in ids], token_scores)
        if self.options.beam_size <= 1:
            ids, score, token_scores = greedy_search(logp, self.blank)
        else:
            ids, score = prefix_beam_search(logp, self.options.beam_size, self.blank)
            token_scores = ctc_viterbi_token_scores(logp, ids, self.blank)
        text, tokens = self.tokens.text(ids)
        return Hypothesis(text, score, tokens, token_scores)

    def many(self, logps: Iterable[np.ndarray], threads: int = 1) -> list[Hypothesis]:
        """Hypotheses in input order; the LM search runs in `threads` threads (it leaves Python
        while it searches), the Python searches in this one."""
        logps = list(logps)
        if self.lm is None or threads <= 1:
            return [self(x) for x in logps]
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(self, logps))


class CTCDecoder:
    """A trained model and its token list: CTC log-posteriors of waveforms, in batches."""

    def __init__(self, exp_dir: Path, device: str | None = None, model_file: str | None = None):
        from cvasr.training.task import CvasrASRTask

        exp_dir = Path(exp_dir)
        name = model_file or next((m for m in MODEL_FILES if (exp_dir / m).exists()), None)
        if name is None or not (exp_dir / name).exists():
            raise FileNotFoundError(f"no trained model in {exp_dir} (looked for "
                                    f"{', '.join(MODEL_FILES)}): run stage 4 first")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, args = CvasrASRTask.build_model_from_file(exp_dir / "config.yaml", exp_dir / name,
                                                         self.device)
        self.model = model.eval()
        if hasattr(model.frontend, "batch_as_alone"):  # batching changes no hypothesis
            model.frontend.batch_as_alone = True
        self.model_file = exp_dir / name
        bpe = args.bpemodel if getattr(args, "token_type", "char") == "bpe" else None
        self.tokens = Tokens(list(args.token_list), bpe)

    @property
    def token_list(self) -> list[str]:
        return self.tokens.token_list

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

    def all_log_probs(self, wavs: Sequence[np.ndarray],
                      batch_size: int) -> list[np.ndarray]:
        """log_probs of every waveform in input order, batches formed from length-sorted inputs."""
        order = sorted(range(len(wavs)), key=lambda i: len(wavs[i]))
        out: list[np.ndarray | None] = [None] * len(wavs)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            for i, logp in zip(idx, self.log_probs([wavs[i] for i in idx])):
                out[i] = logp.numpy()
        return [x for x in out if x is not None]

    def decode(self, wavs: Sequence[np.ndarray], options: DecodingOptions | None = None,
               threads: int = 1) -> list[Hypothesis]:
        """Hypotheses in input order."""
        options = options or DecodingOptions()
        return Search(self.tokens, options).many(self.all_log_probs(wavs, options.batch_size),
                                                 threads)


def read_log_probs(scp: Path) -> dict[str, np.ndarray]:
    """A decode dir's kept log-posteriors, by utterance."""
    import kaldiio

    if not Path(scp).is_file():
        raise FileNotFoundError(f"log-posteriors {scp} do not exist: decode the data dir with "
                                "--save-logp first")
    return {utt: np.asarray(m) for utt, m in kaldiio.load_scp(str(scp)).items()}


def data_dir_log_probs(decoder: CTCDecoder, data_dir: Path,
                       batch_size: int) -> dict[str, np.ndarray]:
    """The model's log-posteriors of every utterance of a dumped data dir."""
    import kaldiio

    data_dir = Path(data_dir)
    utts, wavs = [], []
    for utt, (rate, samples) in kaldiio.load_scp(str(data_dir / "wav.scp")).items():
        if rate != 16000:
            raise ValueError(f"{data_dir / 'wav.scp'}: {utt} is {rate} Hz, not 16 kHz")
        utts.append(utt)
        wavs.append(samples)
    return dict(zip(utts, decoder.all_log_probs(wavs, batch_size)))


def write_decode_dir(out_dir: Path, hyps: dict[str, Hypothesis],
                     logps: dict[str, np.ndarray] | None = None) -> Path:
    """Kaldi-style tables in out_dir, one line an utterance, sorted:

    text: the hypothesis; score: its log-probability; token: its tokens (char mode writes
    `<space>` for a word break); token_score: one log-probability per token (see
    ctc_viterbi_token_scores), for confidence filtering of pseudo-labels and the like; with
    `logps`, logp.ark/logp.scp: the CTC log-posteriors the hypotheses came from.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    utts = sorted(hyps)
    (out_dir / "text").write_text("".join(f"{u} {hyps[u].text}".rstrip() + "\n" for u in utts),
                                  encoding="utf-8")
    (out_dir / "score").write_text("".join(f"{u} {hyps[u].score:.4f}\n" for u in utts),
                                   encoding="utf-8")
    (out_dir / "token").write_text("".join(" ".join([u, *hyps[u].tokens]) + "\n" for u in utts),
                                   encoding="utf-8")
    (out_dir / "token_score").write_text(
        "".join(" ".join([u, *(f"{s:.4f}" for s in hyps[u].token_scores)]) + "\n" for u in utts),
        encoding="utf-8")
    if logps is not None:
        import kaldiio

        kaldiio.save_ark(str(out_dir / LOGP_ARK),
                         {u: np.asarray(logps[u], dtype=np.float32) for u in utts},
                         scp=str(out_dir / LOGP_SCP))
    return out_dir / "text"


def decode_data_dir(decoder: CTCDecoder, data_dir: Path, out_dir: Path,
                    options: DecodingOptions | None = None, save_logp: bool = False,
                    threads: int = 1) -> Path:
    """Decode a dumped data dir into out_dir (see write_decode_dir)."""
    options = options or DecodingOptions()
    logps = data_dir_log_probs(decoder, data_dir, options.batch_size)
    search = Search(decoder.tokens, options)
    hyps = dict(zip(logps, search.many(logps.values(), threads)))
    return write_decode_dir(out_dir, hyps, logps if save_logp else None)


def decode_log_probs(tokens: Tokens, logp_scp: Path, out_dir: Path,
                     options: DecodingOptions, threads: int = 1) -> Path:
    """Decode kept log-posteriors (another search on the same model output) into out_dir."""
    logps = read_log_probs(logp_scp)
    hyps = dict(zip(logps, Search(tokens, options).many(logps.values(), threads)))
    return write_decode_dir(out_dir, hyps)


def transcribe(decoder: CTCDecoder, files: Sequence[Path],
               options: DecodingOptions | None = None, threads: int = 1) -> list[str]:
    """Text of each audio file (mp3/wav/flac, any rate and channel count)."""
    from cvasr.data.audio import load_16k

    return [h.text for h in decoder.decode([load_16k(Path(f)) for f in files], options,
                                           threads)]
