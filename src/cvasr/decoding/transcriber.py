"""`Transcriber`: load a trained model once, then transcribe audio files or arrays of any length.

The Python API of `cvasr transcribe`, which runs on it:

    from cvasr import Transcriber

    asr = Transcriber("exp/asr_train_demo_ctc_char")  # decodes as stage 5 chose
    result = asr.transcribe("clip.mp3")                # or an array: asr.transcribe(x, rate=44100)
    result.text, result.segments                       # segments: start and end in seconds

Audio is converted as stage 2 converts clips (cvasr.data.audio: down-mixed, resampled to 16
kHz with soxr), decoded as the experiment's `decoding.yaml` says (beam, word LM and weights)
unless other options are given, long inputs in windows and segments (cvasr.decoding.chunks).
`transcribe_files` is the pipe's form: it loads and decodes a few files at a time, yields each
file's result in order as soon as its group is decoded, and turns a file that cannot be read into
a result with the reason instead of an exception, so one bad file stops nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

import numpy as np

from cvasr.data.audio import AudioError, array_to_16k, load_16k
from cvasr.decoding.decoder import RATE, CTCDecoder, Hypothesis, Search
from cvasr.decoding.options import DecodingOptions, recorded

Audio = Union[str, os.PathLike, np.ndarray]


@dataclass(frozen=True)
class TimedSegment:
    """A stretch of speech between pauses: seconds from the start of the audio (to the
    model's frame: 40 ms for the demo model, 20 ms for wav2vec 2.0), and its text."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    segments: list[TimedSegment]
    duration: float  # seconds of audio


@dataclass(frozen=True)
class FileResult:
    """transcribe_files' answer for one file: its transcript, or why there is none."""

    path: Path
    transcript: Transcript | None
    error: str | None = None


class Transcriber:
    """A trained experiment, loaded once: `transcribe` audio, `transcribe_files` for many.

    `checkpoint`: the model file (a path, or a name in the experiment dir such as
    `valid.cer_ctc.best.pth` or `10epoch.pth`; default the average of the best). `options`: how
    to decode (default: what stage 5 recorded in the experiment, else greedy CTC); keyword
    arguments change single options of that, e.g. `Transcriber(exp, lm=None, beam_size=5)`.
    `threads`: the LM search's threads (torch's own are set with torch.set_num_threads).
    """

    def __init__(self, model: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                 device: str | None = None, options: DecodingOptions | None = None,
                 threads: int = 1, **option_values: Any) -> None:
        self.exp_dir = Path(model)
        options = options if options is not None else recorded(self.exp_dir)
        if option_values:
            options = options.updated(option_values, "Transcriber")
        options.check()
        self.options, self.threads = options, threads
        self.decoder = CTCDecoder(self.exp_dir, device=device, model_file=checkpoint)

    @property
    def model_file(self) -> Path:
        return self.decoder.model_file

    @cached_property
    def _search(self) -> Search:
        return Search(self.decoder.tokens, self.options, self.decoder.frame_shift)

    def transcribe(self, audio: Audio, rate: int | None = None) -> Transcript:
        """One file (any format libsndfile reads: wav, flac, mp3, ...) or array: (samples,) or
        (samples, channels), float in [-1, 1] or integer PCM, at `rate` Hz (required)."""
        return self.transcribe_many([audio], rate)[0]

    def transcribe_many(self, audios: Sequence[Audio], rate: int | None = None
                        ) -> list[Transcript]:
        """Several at once (batched through the model), in input order. A file that cannot
        be read raises AudioError naming it."""
        wavs = []
        for audio in audios:
            if isinstance(audio, np.ndarray):
                if rate is None:
                    raise ValueError("an array needs its sample rate: transcribe(x, rate=...)")
                wavs.append(array_to_16k(audio, rate))
            else:
                try:
                    wavs.append(load_16k(Path(audio)))
                except AudioError as err:
                    raise AudioError(f"{audio}: {err}") from None
        return self._decode(wavs)

    def transcribe_files(self, paths: Iterable[str | os.PathLike],
                         group: int | None = None) -> Iterator[FileResult]:
        """Each file's result in input order, decoded `group` files at a time (default: the
        batch size), so the first results come before the last file is read."""
        group = group or self.options.batch_size
        pending: list[tuple[Path, np.ndarray | str]] = []
        for path in map(Path, paths):
            try:
                pending.append((path, load_16k(path)))
            except AudioError as err:
                pending.append((path, str(err)))
            if len(pending) >= group:
                yield from self._decode_group(pending)
                pending = []
        yield from self._decode_group(pending)

    def _decode_group(self, pending: list[tuple[Path, np.ndarray | str]]) -> Iterator[FileResult]:
        loaded = [wav for _, wav in pending if not isinstance(wav, str)]
        transcripts = iter(self._decode(loaded) if loaded else [])
        for path, wav in pending:
            if isinstance(wav, str):
                yield FileResult(path, None, wav)
            else:
                yield FileResult(path, next(transcripts))

    def _decode(self, wavs: Sequence[np.ndarray]) -> list[Transcript]:
        logps = self.decoder.all_log_probs(wavs, self.options.batch_size, self.options)
        hyps = self._search.many(logps, self.threads)
        return [self._transcript(h, len(w) / RATE) for h, w in zip(hyps, wavs)]

    def _transcript(self, hyp: Hypothesis, duration: float) -> Transcript:
        shift = self.decoder.frame_shift
        segments = [TimedSegment(round(s.start * shift, 3), round(min(s.end * shift, duration), 3),
                                 s.text) for s in hyp.segments]
        return Transcript(hyp.text, segments, duration)
