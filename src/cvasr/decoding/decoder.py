"""Batched CTC decoding of a trained espnet2 model: greedy, prefix beam, or beam with a word LM.

Utterances go through the model in batches sorted by length (little padding), on the GPU when
there is one; the model takes audio exactly as training gave it: 16 kHz mono int16 samples (the
dump's format), so `transcribe` converts any input file the way stage 2 does. The search then
runs on each utterance's CTC log-posteriors, which a decode dir can keep (`logp.ark`) so that
stage 5 tunes and applies the LM without running the model again. Each hypothesis carries
per-token scores from the best CTC alignment of its labelling, for confidence filtering.

An input longer than `window` seconds runs through the model in overlapping windows and is
searched in segments cut at pauses, each with its frames (cvasr.decoding.chunks says why and
how): memory stays bounded and time grows linearly with the length. Shorter inputs are decoded
whole, as they always were.

The model is built by cvasr.models.loader (only the classes its config names, not espnet2's
whole task), with the third-party chatter of importing and building it held back
(cvasr.quiet).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from cvasr import defaults
from cvasr.decoding.chunks import Window, plan_windows, segment_bounds, stitch
from cvasr.decoding.ctc import ctc_best_alignment, greedy_search, join_tokens, prefix_beam_search
from cvasr.decoding.options import DecodingOptions
from cvasr.quiet import captured_chatter, espnet2_forward_deprecations

#: The checkpoints a finished run leaves, best first: the average of the n best by validation
#: CER, the single best, the last epoch.
MODEL_FILES = ("valid.cer_ctc.ave.pth", "valid.cer_ctc.best.pth", "latest.pth")
#: the log-posteriors a decode dir keeps (a Kaldi matrix ark and its scp), and the seconds a
#: frame of them lasts (Kaldi's name for it)
LOGP_ARK, LOGP_SCP, FRAME_SHIFT = "logp.ark", "logp.scp", "frame_shift"
#: audio rate the models take (stage 2's dump)
RATE = 16_000


@dataclass(frozen=True)
class Segment:
    """A stretch of speech in a hypothesis: frames [start, end) from its first token's first
    frame to its last token's last (in the best CTC alignment), and its text."""

    start: int
    end: int
    text: str


@dataclass
class Hypothesis:
    text: str
    score: float  # log-probability of the labelling (greedy: of the best path; LM: combined)
    tokens: list[str]
    token_scores: list[float]  # per token: see ctc_viterbi_token_scores
    # one per stretch of speech between pauses (an input searched whole has at most one);
    # none without text
    segments: list[Segment] = field(default_factory=list)


@dataclass(frozen=True)
class Tokens:
    """An experiment's token list, and how its tokens make text."""

    token_list: list[str]
    bpemodel: str | None = None

    @classmethod
    def of_experiment(cls, exp_dir: Path) -> "Tokens":
        """From the experiment's config.yaml, without building the model."""
        from cvasr.models.loader import read_config

        return cls.of_config(read_config(Path(exp_dir) / "config.yaml"))

    @classmethod
    def of_config(cls, conf: dict) -> "Tokens":
        from cvasr.models.loader import token_list_of

        bpe = conf.get("bpemodel") if conf.get("token_type") == "bpe" else None
        return cls(token_list_of(conf), bpe)

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
    """One utterance's CTC log-posteriors to a Hypothesis, as the options say.

    With `frame_shift` (seconds a frame), an input longer than `options.window` is searched in
    segments cut at pauses (cvasr.decoding.chunks) and the segments' hypotheses are joined;
    without it every input is searched whole.
    """

    def __init__(self, tokens: Tokens, options: DecodingOptions,
                 frame_shift: float | None = None) -> None:
        from cvasr.decoding.lm_search import LMSearch

        options.check()
        self.tokens, self.options, self.blank = tokens, options, 0
        self.frame_shift = frame_shift
        self.lm = None if options.lm is None else LMSearch(
            tokens.token_list, Path(options.lm), options.lm_weight, options.word_bonus,
            options.lm_beam_size, options.unk_offset)
        # what separates two segments' tokens: the word break where it is a token of its own
        # (a sentencepiece piece carries its own)
        self.word_break = "<space>" if "<space>" in tokens.token_list else None
        self._pause_ids = [self.blank] + ([tokens.token_list.index(self.word_break)]
                                          if self.word_break else [])

    def whole(self, logp: np.ndarray) -> Hypothesis:
        """The hypothesis of logp searched as one piece."""
        logp = np.asarray(logp, dtype=np.float32)
        if self.lm is not None:
            text, score = self.lm.best(logp)
            ids = self.tokens.ids(text)
            try:
                token_scores, spans = ctc_best_alignment(logp, ids, self.blank)
            except ValueError:  # a labelling the frames cannot hold: no scores rather than wrong
                token_scores, spans = [float("nan")] * len(ids), [(0, len(logp))] if ids else []
            tokens = [self.tokens.token_list[i] for i in ids]
        else:
            if self.options.beam_size <= 1:
                ids, score, token_scores, spans = greedy_search(logp, self.blank)
            else:
                ids, score = prefix_beam_search(logp, self.options.beam_size, self.blank)
                token_scores, spans = ctc_best_alignment(logp, ids, self.blank)
            text, tokens = self.tokens.text(ids)
        segments = [Segment(spans[0][0], spans[-1][1], text)] if text and spans else []
        return Hypothesis(text, score, tokens, token_scores, segments)

    def bounds(self, logp: np.ndarray) -> list[tuple[int, int]]:
        """Frames [start, end) of the segments logp is searched in."""
        if self.frame_shift is None:
            return [(0, len(logp))]
        pause = np.isin(np.asarray(logp).argmax(axis=-1), self._pause_ids)
        return segment_bounds(pause, max(1, round(defaults.DECODE_SEGMENT_PAUSE /
                                                  self.frame_shift)),
                              max(1, int(self.options.window / self.frame_shift)))

    def joined(self, parts: Sequence[tuple[int, Hypothesis]]) -> Hypothesis:
        """One hypothesis from its segments' (each with its first frame): texts joined by a
        space, scores added; between two segments' tokens a word break, scored 0 (a pause is
        a certain word break, which no search scored)."""
        if len(parts) == 1 and parts[0][0] == 0:
            return parts[0][1]
        out = Hypothesis("", 0.0, [], [], [])
        for offset, hyp in parts:
            out.score += hyp.score
            if not hyp.text:
                continue
            if out.tokens and self.word_break:
                out.tokens.append(self.word_break)
                out.token_scores.append(0.0)
            out.text = f"{out.text} {hyp.text}" if out.text else hyp.text
            out.tokens += hyp.tokens
            out.token_scores += hyp.token_scores
            out.segments += [replace(seg, start=seg.start + offset, end=seg.end + offset)
                             for seg in hyp.segments]
        return out

    def __call__(self, logp: np.ndarray) -> Hypothesis:
        return self.many([logp])[0]

    def many(self, logps: Iterable[np.ndarray], threads: int = 1) -> list[Hypothesis]:
        """Hypotheses in input order; the segments of all inputs are searched in `threads`
        threads when there is an LM (its search leaves Python while it runs), else in this
        one."""
        logps = [np.asarray(x) for x in logps]
        pieces = [(i, a, b) for i, x in enumerate(logps) for a, b in self.bounds(x)]
        jobs = [logps[i][a:b] for i, a, b in pieces]
        if self.lm is None or threads <= 1:
            hyps = [self.whole(x) for x in jobs]
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                hyps = list(pool.map(self.whole, jobs))
        parts: list[list[tuple[int, Hypothesis]]] = [[] for _ in logps]
        for (i, a, _), hyp in zip(pieces, hyps):
            parts[i].append((a, hyp))
        return [self.joined(p) for p in parts]


def resolve_model_file(exp_dir: Path, checkpoint: Path | str | None = None) -> Path:
    """The model file to decode with: `checkpoint` as a path, or a file of that name in the
    experiment dir; by default the first of MODEL_FILES there."""
    exp_dir = Path(exp_dir)
    if checkpoint is None:
        name = next((m for m in MODEL_FILES if (exp_dir / m).is_file()), None)
        if name is None:
            raise FileNotFoundError(f"no trained model in {exp_dir} (looked for "
                                    f"{', '.join(MODEL_FILES)}): run stage 4 first")
        return exp_dir / name
    for candidate in (Path(checkpoint), exp_dir / checkpoint):
        if candidate.is_file():
            return candidate
    if Path(checkpoint).is_dir():
        raise ValueError(f"checkpoint {checkpoint} is a directory, not a model file")
    found = sorted(p.name for p in exp_dir.glob("*.pth"))
    raise FileNotFoundError(f"checkpoint {checkpoint} not found (as a path, nor in {exp_dir}, "
                            f"which holds: {', '.join(found) or 'no .pth files'})")


class CTCDecoder:
    """A trained model and its token list: CTC log-posteriors of waveforms, in batches.

    `model_file`: the checkpoint to load (a path, or a file name in exp_dir; see
    resolve_model_file)."""

    def __init__(self, exp_dir: Path, device: str | None = None,
                 model_file: Path | str | None = None):
        from cvasr.models.loader import build_model, read_config, trained

        exp_dir = Path(exp_dir)
        conf = read_config(exp_dir / "config.yaml")
        self.model_file = resolve_model_file(exp_dir, model_file)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # third-party code prints, logs and warns while it is imported and built; a model file
        # that does not fit is our own one-line error, so its loading is outside
        with captured_chatter():
            model = build_model(conf)
        self.model = trained(model, self.model_file, self.device)
        if hasattr(self.model.frontend, "batch_as_alone"):  # batching changes no hypothesis
            self.model.frontend.batch_as_alone = True
        self.tokens = Tokens.of_config(conf)

    @property
    def token_list(self) -> list[str]:
        return self.tokens.token_list

    @torch.no_grad()
    def log_probs(self, wavs: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """CTC log-posteriors (frames, vocab) of each waveform, in input order. The batch is
        at least the shortest clip training takes (defaults.MIN_DURATION) long: shorter input
        is padded with silence, which the frontends' framing needs."""
        lengths = torch.tensor([len(w) for w in wavs])
        width = max(int(lengths.max()), int(defaults.MIN_DURATION * RATE))
        batch = torch.zeros(len(wavs), width)
        for i, w in enumerate(wavs):
            batch[i, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
        lengths = lengths.clamp(min=int(defaults.MIN_DURATION * RATE))
        # bf16 on GPUs that have it, as in training; CPUs decode in fp32
        bf16 = self.device.startswith("cuda") and torch.cuda.is_bf16_supported()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16), \
                espnet2_forward_deprecations():
            enc, enc_lens = self.model.encode(batch.to(self.device), lengths.to(self.device))
        logp = self.model.ctc.log_softmax(enc).float().cpu()
        return [logp[i, : int(enc_lens[i])] for i in range(len(wavs))]

    @cached_property
    def frame_shift_samples(self) -> int:
        """Samples a frame of the model's output: measured on 1 s and 2 s of noise (the frames
        two lengths give differ by their difference over the frame shift)."""
        noise = np.random.default_rng(0).normal(0, 1000, 2 * RATE).astype(np.float32)
        one, two = (len(self.log_probs([noise[:n]])[0]) for n in (RATE, 2 * RATE))
        if two <= one or RATE % (two - one):
            raise RuntimeError(f"the model gives {one} frames for 1 s and {two} for 2 s: no "
                               "whole number of samples a frame, so it cannot be run in windows")
        return RATE // (two - one)

    @property
    def frame_shift(self) -> float:
        """Seconds a frame of the model's output."""
        return self.frame_shift_samples / RATE

    def windows(self, n_samples: int, options: DecodingOptions) -> list[Window]:
        """The windows an input of n_samples runs through the model in (one if it is no
        longer than options.window)."""
        if n_samples <= options.window * RATE:
            return [Window(0, n_samples, 0, None)]
        return plan_windows(n_samples, self.frame_shift_samples, int(options.window * RATE),
                            int(options.window_overlap * RATE))

    def all_log_probs(self, wavs: Sequence[np.ndarray], batch_size: int,
                      options: DecodingOptions | None = None) -> list[np.ndarray]:
        """log_probs of every waveform in input order: long ones in windows (stitched), every
        window and short input in batches formed from length-sorted pieces."""
        options = options or DecodingOptions()
        plans = [self.windows(len(w), options) for w in wavs]
        pieces = [(i, k) for i, plan in enumerate(plans) for k in range(len(plan))]
        span = [plans[i][k].end - plans[i][k].start for i, k in pieces]
        order = sorted(range(len(pieces)), key=lambda j: span[j])
        out: list[list[np.ndarray | None]] = [[None] * len(plan) for plan in plans]
        for start in range(0, len(order), batch_size):
            idx = [pieces[j] for j in order[start:start + batch_size]]
            batch = [wavs[i][plans[i][k].start:plans[i][k].end] for i, k in idx]
            for (i, k), logp in zip(idx, self.log_probs(batch)):
                out[i][k] = logp.numpy()
        return [stitch(plan, parts) for plan, parts in zip(plans, out)]  # type: ignore[arg-type]

    def decode(self, wavs: Sequence[np.ndarray], options: DecodingOptions | None = None,
               threads: int = 1) -> list[Hypothesis]:
        """Hypotheses in input order."""
        options = options or DecodingOptions()
        logps = self.all_log_probs(wavs, options.batch_size, options)
        # the frame shift is measured only if an input is long enough to be searched in segments
        long = any(len(w) > options.window * RATE for w in wavs)
        return Search(self.tokens, options, self.frame_shift if long else None).many(logps,
                                                                                    threads)


def read_log_probs(scp: Path) -> dict[str, np.ndarray]:
    """A decode dir's kept log-posteriors, by utterance."""
    import kaldiio

    if not Path(scp).is_file():
        raise FileNotFoundError(f"log-posteriors {scp} do not exist: decode the data dir with "
                                "--save-logp first")
    return {utt: np.asarray(m) for utt, m in kaldiio.load_scp(str(scp)).items()}


def read_frame_shift(scp: Path) -> float | None:
    """Seconds a frame of kept log-posteriors lasts (the `frame_shift` file next to their scp),
    so that searching them again cuts long utterances as the first search did; None if the
    decode dir predates it."""
    path = Path(scp).parent / FRAME_SHIFT
    if not path.is_file():
        return None
    try:
        return float(path.read_text(encoding="utf-8").strip())
    except ValueError:
        raise ValueError(f"{path}: not a number of seconds") from None


def data_dir_log_probs(decoder: CTCDecoder, data_dir: Path, batch_size: int,
                       options: DecodingOptions | None = None) -> dict[str, np.ndarray]:
    """The model's log-posteriors of every utterance of a dumped data dir (long ones in
    windows: see CTCDecoder.all_log_probs)."""
    import kaldiio

    data_dir = Path(data_dir)
    utts, wavs = [], []
    for utt, (rate, samples) in kaldiio.load_scp(str(data_dir / "wav.scp")).items():
        if rate != 16000:
            raise ValueError(f"{data_dir / 'wav.scp'}: {utt} is {rate} Hz, not 16 kHz")
        utts.append(utt)
        wavs.append(samples)
    return dict(zip(utts, decoder.all_log_probs(wavs, batch_size, options)))


def write_decode_dir(out_dir: Path, hyps: dict[str, Hypothesis],
                     logps: dict[str, np.ndarray] | None = None,
                     frame_shift: float | None = None) -> Path:
    """Kaldi-style tables in out_dir, one line an utterance, sorted:

    text: the hypothesis; score: its log-probability; token: its tokens (char mode writes
    `<space>` for a word break); token_score: one log-probability per token (see
    ctc_viterbi_token_scores), for confidence filtering of pseudo-labels and the like; with
    `logps`, logp.ark/logp.scp: the CTC log-posteriors the hypotheses came from (and with
    `frame_shift`, the seconds a frame of them lasts, in frame_shift).
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
        if frame_shift is not None:
            (out_dir / FRAME_SHIFT).write_text(f"{frame_shift!r}\n", encoding="utf-8")
    return out_dir / "text"


def decode_data_dir(decoder: CTCDecoder, data_dir: Path, out_dir: Path,
                    options: DecodingOptions | None = None, save_logp: bool = False,
                    threads: int = 1) -> Path:
    """Decode a dumped data dir into out_dir (see write_decode_dir)."""
    options = options or DecodingOptions()
    logps = data_dir_log_probs(decoder, data_dir, options.batch_size, options)
    search = Search(decoder.tokens, options, decoder.frame_shift)
    hyps = dict(zip(logps, search.many(logps.values(), threads)))
    return write_decode_dir(out_dir, hyps, logps if save_logp else None, decoder.frame_shift)


def decode_log_probs(tokens: Tokens, logp_scp: Path, out_dir: Path,
                     options: DecodingOptions, threads: int = 1) -> Path:
    """Decode kept log-posteriors (another search on the same model output) into out_dir."""
    logps = read_log_probs(logp_scp)
    search = Search(tokens, options, read_frame_shift(logp_scp))
    hyps = dict(zip(logps, search.many(logps.values(), threads)))
    return write_decode_dir(out_dir, hyps)
