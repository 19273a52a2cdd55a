"""The embedded demo corpus: an Assamese Common Voice 7.0 release synthesised with espeak-ng.

No Common Voice download is possible where the tests and the demo run, so the recipe makes its
own release in exactly CV 7.0's layout (`clips/*.mp3` at 48 kHz mono, the six tsv files with
CV 7.0's header) and every later stage reads it like the real one. Speakers are espeak-ng voice
variants with their own pitch and rate; train, dev and test are speaker- and sentence-disjoint,
as Common Voice's CorporaCreator makes them; validated also holds extra recordings of split
sentences, and other/invalidated hold clips without enough (or with negative) votes.

Everything is a function of (seed, size): the same arguments give byte-identical files, and a
re-run reuses the clips that already exist.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import soundfile as sf
import soxr

from cvasr.corpora.commonvoice import CV7_HEADER, SPLIT_FILES
from cvasr.corpora.demo_lexicon import decompose_nukta, make_sentences, precompose_nukta
from cvasr.progress import progress

SAMPLE_RATE = 48_000
FORMAT_VERSION = 1
MANIFEST = ".demo_corpus.json"

# espeak-ng's Assamese rules do not cover ড় and ঢ়: a word holding either is spelled out letter by
# letter in a Bengali voice. In Assamese both sound like ৰ, so the synthesiser is given ৰ; the
# transcript keeps the real spelling, as a speaker reading the sentence would.
_SPOKEN_RESPELLING = str.maketrans({"\u09dc": "\u09f0", "\u09dd": "\u09f0"})


@dataclass(frozen=True)
class SizeSpec:
    """How many sentences each part of the release gets, and how many speakers each split has."""

    train: int
    dev: int
    test: int
    extra_validated: int  # second recordings of train/dev/test sentences, in validated.tsv only
    other: int
    invalidated: int
    speakers: tuple[int, int, int]  # train, dev, test speakers


SIZES = {
    "small": SizeSpec(train=24, dev=6, test=6, extra_validated=4, other=3, invalidated=3,
                      speakers=(2, 1, 1)),
    "full": SizeSpec(train=560, dev=80, test=120, extra_validated=40, other=30, invalidated=30,
                     speakers=(8, 2, 2)),
}

# (espeak-ng variant, gender, age) pool; pitch and rate are drawn per speaker from the seed.
_VOICES = [
    ("m1", "male", "twenties"), ("f1", "female", "twenties"), ("m3", "male", "thirties"),
    ("f2", "female", "thirties"), ("m2", "male", "fourties"), ("f3", "female", "twenties"),
    ("m4", "male", "fifties"), ("f4", "female", "fourties"), ("m5", "male", "twenties"),
    ("f5", "female", "thirties"), ("m6", "male", "thirties"), ("m7", "male", "twenties"),
    ("klatt", "male", "fourties"), ("klatt3", "female", "twenties"),
]


@dataclass(frozen=True)
class Speaker:
    client_id: str
    voice: str  # espeak-ng voice variant (m1, f2, klatt, ...)
    pitch: int
    rate: int
    gender: str
    age: str
    language: str = "as"  # espeak-ng language of the voice, and the tsv's locale


@dataclass(frozen=True)
class Clip:
    path: str
    speaker: Speaker
    sentence: str  # as written in the tsv
    spoken: str  # what espeak-ng is given
    up_votes: int
    down_votes: int
    lead_silence: float
    tail_silence: float
    snr_db: float
    noise_seed: int


def make_speakers(count: int, rng: random.Random, seed: int, language: str = "as") -> list[Speaker]:
    if count > len(_VOICES):
        raise ValueError(f"at most {len(_VOICES)} demo speakers, asked for {count}")
    voices = rng.sample(_VOICES, count)
    speakers = []
    for i, (voice, gender, age) in enumerate(voices):
        client_id = hashlib.sha512(f"cvasr-demo/{seed}/{i}/{voice}".encode()).hexdigest()
        speakers.append(Speaker(client_id, voice, pitch=rng.randint(30, 70), rate=rng.randint(140, 185),
                                gender=gender, age=age, language=language))
    return speakers


def plan_release(seed: int, size: str) -> dict[str, list[Clip]]:
    """Decide every clip of the release (without synthesising): tsv name -> clips."""
    spec = SIZES[size]
    rng = random.Random(seed)
    counts = [spec.train, spec.dev, spec.test, spec.other, spec.invalidated]
    sentences = make_sentences(sum(counts), seed)
    rng.shuffle(sentences)
    n_train, n_dev, n_test = spec.speakers
    speakers = make_speakers(n_train + n_dev + n_test, rng, seed)
    groups = {
        "train": speakers[:n_train],
        "dev": speakers[n_train:n_train + n_dev],
        "test": speakers[n_train + n_dev:],
    }
    clip_number = 20_000_000 + rng.randrange(1_000_000)

    def clip(sentence: str, speaker: Speaker, up: int, down: int) -> Clip:
        nonlocal clip_number
        clip_number += rng.randint(1, 40)
        # About a quarter of the sentences are written with decomposed nukta letters, as many
        # Assamese keyboards type them: the normaliser has to make both spellings one.
        written = decompose_nukta(sentence) if rng.random() < 0.25 else sentence
        return Clip(
            path=f"common_voice_as_{clip_number}.mp3", speaker=speaker, sentence=written,
            spoken=sentence.translate(_SPOKEN_RESPELLING), up_votes=up, down_votes=down,
            lead_silence=round(rng.uniform(0.2, 0.8), 3), tail_silence=round(rng.uniform(0.2, 0.8), 3),
            snr_db=round(rng.uniform(30.0, 45.0), 1), noise_seed=rng.randrange(2**31),
        )

    release: dict[str, list[Clip]] = {name: [] for name in SPLIT_FILES}
    start = 0
    for split, n in zip(("train", "dev", "test"), counts[:3]):
        for sentence in sentences[start:start + n]:
            release[split].append(clip(sentence, rng.choice(groups[split]), rng.randint(2, 3), 0))
        start += n
    validated = [c for split in ("train", "dev", "test") for c in release[split]]
    for original in rng.sample(validated, spec.extra_validated):
        split = next(s for s in ("train", "dev", "test") if original.speaker in groups[s])
        others = [s for s in groups[split] if s != original.speaker] or groups[split]
        validated.append(clip(precompose_nukta(original.sentence), rng.choice(others), 2, 0))
    release["validated"] = sorted(validated, key=lambda c: c.path)
    for sentence in sentences[start:start + spec.other]:
        release["other"].append(clip(sentence, rng.choice(speakers), rng.randint(0, 1), 0))
    start += spec.other
    for sentence in sentences[start:start + spec.invalidated]:
        release["invalidated"].append(clip(sentence, rng.choice(speakers), rng.randint(0, 1), 2))
    return release


def plan_sentence_release(language: str, sentences: Mapping[str, Sequence[str]],
                          seed: int = 0) -> dict[str, list[Clip]]:
    """A release of the given sentences in any language espeak-ng speaks: each of train, dev and
    test (keys of `sentences`) gets a speaker of its own; validated holds all their clips, other
    and invalidated are empty. For releases in other languages than the demo's (tests)."""
    rng = random.Random(seed)
    splits = ("train", "dev", "test")
    speakers = dict(zip(splits, make_speakers(len(splits), rng, seed, language)))
    release: dict[str, list[Clip]] = {name: [] for name in SPLIT_FILES}
    number = 30_000_000 + rng.randrange(1_000_000)
    for split in splits:
        for sentence in sentences.get(split, ()):
            number += rng.randint(1, 40)
            release[split].append(Clip(
                path=f"common_voice_{language}_{number}.mp3", speaker=speakers[split],
                sentence=sentence, spoken=sentence, up_votes=2, down_votes=0,
                lead_silence=0.3, tail_silence=0.3, snr_db=40.0, noise_seed=rng.randrange(2**31)))
    release["validated"] = sorted((c for s in splits for c in release[s]), key=lambda c: c.path)
    return release


def synthesise(clip: Clip) -> np.ndarray:
    """espeak-ng speech for one clip at 48 kHz, with silence and a little noise, float in [-1, 1]."""
    with tempfile.TemporaryDirectory(prefix="cvasr-espeak-") as tmp:
        wav = Path(tmp) / "speech.wav"
        cmd = ["espeak-ng", "-v", f"{clip.speaker.language}+{clip.speaker.voice}", "-p", str(clip.speaker.pitch),
               "-s", str(clip.speaker.rate), "-w", str(wav), "--", clip.spoken]
        subprocess.run(cmd, check=True, capture_output=True)
        speech, rate = sf.read(wav, dtype="float64")
    speech = soxr.resample(speech, rate, SAMPLE_RATE, quality="HQ")
    lead = np.zeros(int(clip.lead_silence * SAMPLE_RATE))
    tail = np.zeros(int(clip.tail_silence * SAMPLE_RATE))
    audio = np.concatenate([lead, speech, tail])
    speech_power = float(np.mean(speech**2)) or 1e-8
    noise_rng = np.random.default_rng(clip.noise_seed)
    noise = noise_rng.standard_normal(len(audio)) * np.sqrt(speech_power / 10 ** (clip.snr_db / 10))
    audio = audio + noise
    peak = float(np.max(np.abs(audio)))
    if peak > 0.99:
        audio *= 0.99 / peak
    return audio


def _write_clip(clip: Clip, clips_dir: Path) -> None:
    target = clips_dir / clip.path
    if target.is_file() and target.stat().st_size > 0:
        return  # reuse: the file is a pure function of the clip, and was written atomically
    audio = synthesise(clip)
    partial = target.with_name(target.name + ".partial")
    sf.write(partial, audio, SAMPLE_RATE, format="MP3")
    os.replace(partial, target)


def _tsv_row(clip: Clip, header: Sequence[str]) -> list[str]:
    """The clip's row under `header`: columns are filled by name, those it has no value for
    stay empty (as Common Voice leaves unknown age, accent...)."""
    s = clip.speaker
    values = {"client_id": s.client_id, "path": clip.path, "sentence": clip.sentence,
              "up_votes": str(clip.up_votes), "down_votes": str(clip.down_votes), "age": s.age,
              "gender": s.gender, "locale": s.language,
              "sentence_id": hashlib.sha256(clip.sentence.encode()).hexdigest()}
    return [values.get(column, "") for column in header]


def check_tools(language: str = "as") -> None:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: run `make setup` (Debian package espeak-ng)")
    voices = subprocess.run(["espeak-ng", f"--voices={language}"], capture_output=True,
                            text=True).stdout
    if not any(line.split()[1:2] == [language] for line in voices.splitlines()[1:]):
        raise RuntimeError(f"espeak-ng has no voice for '{language}' "
                           f"(`espeak-ng --voices={language}` lists none)")


def write_release(out: Path, release: dict[str, list[Clip]], header: Sequence[str] = CV7_HEADER,
                  nj: int = 2, show_progress: bool = True,
                  desc: str = "synthesising clips") -> dict[str, int]:
    """Synthesise every clip of `release` (tsv name -> clips) into out/clips and write the tsv
    files with `header`; clips that already exist are kept. Returns the rows per tsv."""
    out = Path(out)
    clips_dir = out / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    for language in sorted({c.speaker.language for clips in release.values() for c in clips}):
        check_tools(language)
    unique = {c.path: c for clips in release.values() for c in clips}
    with ThreadPoolExecutor(max_workers=max(1, nj)) as pool:
        jobs = pool.map(lambda c: _write_clip(c, clips_dir), unique.values())
        for _ in progress(jobs, total=len(unique), desc=desc, unit="clip",
                          disable=not show_progress):
            pass
    for name, clips in release.items():
        lines = ["\t".join(header)] + ["\t".join(_tsv_row(c, header)) for c in clips]
        (out / SPLIT_FILES[name]).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {name: len(clips) for name, clips in release.items()}


def write_demo_corpus(out: Path, seed: int = 0, size: str = "full", nj: int = 2,
                      show_progress: bool = True) -> dict[str, int]:
    """Write (or complete) the demo release in `out`; returns the number of rows per tsv."""
    if size not in SIZES:
        raise ValueError(f"unknown demo corpus size {size!r}; choose from {sorted(SIZES)}")
    check_tools("as")
    out = Path(out)
    manifest = json.loads(json.dumps({"format_version": FORMAT_VERSION, "seed": seed,
                                      "size": size, "spec": asdict(SIZES[size])}))
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        existing = json.loads(manifest_path.read_text())
        if existing != manifest:
            raise ValueError(
                f"{out} already holds a demo corpus made with seed={existing.get('seed')} "
                f"size={existing.get('size')}; pass another --out or remove that directory")
    elif out.exists() and any(p.name != MANIFEST + ".partial" for p in out.iterdir()):
        raise ValueError(f"{out} exists, is not empty and is not a demo corpus; pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    # atomically: a manifest cut short (a full disk) must not make the folder unusable
    partial = manifest_path.with_name(MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(partial, manifest_path)
    return write_release(out, plan_release(seed, size), CV7_HEADER, nj=nj,
                         show_progress=show_progress, desc="synthesising demo clips")
