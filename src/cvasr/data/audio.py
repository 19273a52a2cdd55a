"""Decode, check and convert audio in-process (libsndfile with mpg123 for mp3, soxr to resample).

Nothing here runs a shell or an external program: a clip's file name is only ever a path
argument, and a broken file is reported as an `AudioError` with a reason, never a crash.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

TARGET_RATE = 16_000
#: A decode that yields less than this share of the length the file's header announces is a
#: truncated download (mpg123 stops quietly at the first broken frame).
MIN_DECODED_SHARE = 0.9


class AudioError(Exception):
    """A clip that cannot be used; the message is the reason recorded in the prep report."""


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence libmpg123's own warnings on fd 2 (they say nothing our AudioError does not)."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass(frozen=True)
class AudioInfo:
    rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.rate


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise AudioError("is a directory, not an audio file")
    if not path.exists():
        raise AudioError("audio file not found")
    if not path.is_file():
        raise AudioError("not a regular file")
    if not os.access(path, os.R_OK):
        raise AudioError("cannot be read (permission denied)")
    if path.stat().st_size == 0:
        raise AudioError("audio file is empty (0 bytes)")


def _check_decoded(frames: int, announced: int, rate: int) -> None:
    if frames == 0:
        raise AudioError("no audio decoded (0 samples)")
    if 0 < announced < 2**62 and frames < MIN_DECODED_SHARE * announced:
        raise AudioError(f"truncated audio: decoded {frames / rate:.2f} s of the "
                         f"{announced / rate:.2f} s its header announces")


#: libsndfile says "File does not exist or is not a regular file" for any unreadable data
_UNDECODABLE = "undecodable audio (not a readable mp3/wav/flac file)"


def read_audio(path: Path) -> tuple[np.ndarray, AudioInfo]:
    """Decode a whole file to float32 (frames, channels); raise AudioError if it is unusable."""
    path = Path(path)
    _check_file(path)
    try:
        with _quiet_native_stderr():
            with sf.SoundFile(path) as f:
                announced = f.frames
                audio = f.read(dtype="float32", always_2d=True)
                rate, channels = f.samplerate, f.channels
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise AudioError(_UNDECODABLE) from err
    _check_decoded(audio.shape[0], announced, rate)
    return audio, AudioInfo(rate=rate, channels=channels, frames=audio.shape[0])


def probe_audio(path: Path) -> AudioInfo:
    """Decode to check the file and measure its real length (headers of mp3s can be wrong)."""
    return read_audio(path)[1]


def to_mono_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """Down-mix (mean of channels) and resample with soxr's high-quality filter to 16 kHz int16."""
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    if rate != TARGET_RATE:
        mono = soxr.resample(mono, rate, TARGET_RATE, quality="HQ")
    return _to_int16(mono)


def _to_int16(mono: np.ndarray) -> np.ndarray:
    return np.clip(np.round(mono * 32767.0), -32768, 32767).astype(np.int16)


#: seconds of a file load_16k decodes at a time
BLOCK_SECONDS = 10


def load_16k(path: Path) -> np.ndarray:
    """A clip as the 16 kHz mono int16 samples the dump holds for it: to_mono_16k of its whole
    decode, computed a block at a time (soxr's stream resampler gives exactly the one-shot
    resampler's samples), so that memory holds the 16 kHz result of an hour-long file, not its
    whole decode at its own rate and channel count in float32 (1.4 GB for 48 kHz stereo)."""
    path = Path(path)
    _check_file(path)
    parts, frames = [], 0
    try:
        with _quiet_native_stderr():
            with sf.SoundFile(path) as f:
                announced, rate = f.frames, f.samplerate
                stream = None if rate == TARGET_RATE else soxr.ResampleStream(
                    rate, TARGET_RATE, 1, dtype="float32", quality="HQ")
                for block in f.blocks(blocksize=rate * BLOCK_SECONDS, dtype="float32",
                                      always_2d=True):
                    frames += len(block)
                    mono = block.mean(axis=1)
                    parts.append(_to_int16(stream.resample_chunk(mono) if stream else mono))
                if stream is not None:
                    parts.append(_to_int16(stream.resample_chunk(np.zeros(0, np.float32),
                                                                 last=True)))
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise AudioError(_UNDECODABLE) from err
    _check_decoded(frames, announced, rate)
    return np.concatenate(parts)


def array_to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """Samples in memory as load_16k gives a file's: `audio` is (samples,) or (samples,
    channels), float in [-1, 1] or integer PCM (int16, int32), at `rate` Hz. Mono int16 at
    16 kHz, the dump's own format, is taken as it is."""
    audio = np.asarray(audio)
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"the sample rate must be a positive whole number of Hz, got {rate!r}")
    if audio.ndim not in (1, 2) or (audio.ndim == 2 and audio.shape[1] > 16):
        raise ValueError(f"audio must be (samples,) or (samples, channels), got shape "
                         f"{audio.shape}")
    if audio.size == 0:
        raise ValueError("no audio (0 samples)")
    if audio.dtype == np.int16 and audio.ndim == 1 and rate == TARGET_RATE:
        return audio
    if np.issubdtype(audio.dtype, np.integer):
        audio = audio.astype(np.float32) / float(np.iinfo(audio.dtype).max + 1)
    elif np.issubdtype(audio.dtype, np.floating):
        audio = audio.astype(np.float32)
        if not np.isfinite(audio).all():
            raise ValueError("audio holds NaN or infinite samples")
    else:
        raise ValueError(f"audio must hold numbers, got dtype {audio.dtype}")
    return to_mono_16k(audio, int(rate))
