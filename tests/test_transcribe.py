"""Inference for people: the model built from config.yaml alone, long audio through a real
model, the Python API, and `cvasr transcribe`'s pipe contract, with real espnet2 models (random
ones where the weights do not matter, a tiny trained one where the text does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from conftest import RECIPE, REPO

RATE = 16_000
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}
#: what `espnet2.tasks.asr` pulls in and decoding must not (cvasr.models.loader)
HEAVY = ("espnet2.tasks.asr", "espnet2.tasks.abs_task", "espnet2.tasks.ssl",
         "espnet2.tasks.hubert", "g2p_en", "inflect", "transformers", "nltk")
#: a model whose every output frame depends only on audio near it (no attention, no utterance
#: normalisation): fbank features straight into the CTC layer
LOCAL_CONFIG = {"frontend": "s3prl",
                "frontend_conf": {"frontend_conf": {"upstream": "fbank_no_cmvn"},
                                  "multilayer_feature": False, "fs": "16k"},
                "normalize": None, "specaug": None, "encoder": "identity",
                "model": "cvasr_ctc", "model_conf": {"ctc_weight": 1.0}}
TOKENS = ["<blank>", "<unk>", "<space>", *"abcdefgh", "<sos/eos>"]


def random_exp(out: Path, config: dict, tokens: list[str] = TOKENS, seed: int = 0) -> Path:
    """An experiment dir as stage 4 leaves one (espnet2's full config.yaml and a model file),
    holding a randomly initialised model."""
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    from cvasr.training.task import CvasrASRTask

    out.mkdir(parents=True, exist_ok=True)
    (out / "train.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (out / "tokens.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    args = CvasrASRTask.get_parser().parse_args(
        ["--config", str(out / "train.yaml"), "--token_list", str(out / "tokens.txt"),
         "--token_type", "char", "--output_dir", str(out)])
    torch.manual_seed(seed)
    model = CvasrASRTask.build_model(args)
    with (out / "config.yaml").open("w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(vars(args), f, indent=4, sort_keys=False)
    torch.save(model.state_dict(), out / "valid.cer_ctc.ave.pth")
    return out


@pytest.fixture(scope="module")
def local_exp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_exp(tmp_path_factory.mktemp("local") / "exp", LOCAL_CONFIG)


@pytest.fixture(scope="module")
def wav2vec2_exp(tmp_path_factory: pytest.TempPathFactory, tiny_upstream: Path) -> Path:
    from cvasr.training.stages import resolve_config

    work = tmp_path_factory.mktemp("w2v")
    config = resolve_config(RECIPE / "conf" / "train_xlsr300m_ctc.yaml", str(tiny_upstream),
                            work / "dl", work / "resolved.yaml")
    return random_exp(work / "exp", config)


@pytest.fixture(scope="module")
def loudness_exp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An oracle model: the local model above with its CTC layer set by hand to read each
    10 ms frame's loudness (the mean of its 80 log-mel energies, e): the blank below 13
    (digital silence is -16, the demo clips' quiet parts 10), `a` from 13, `b` from 16, `c`
    from 17.5, nothing else ever. Its text is known from the audio alone, frame by frame."""
    from cvasr.decoding.options import DecodingOptions, write_record

    exp = random_exp(tmp_path_factory.mktemp("loudness") / "exp", LOCAL_CONFIG)
    state = torch.load(exp / "valid.cer_ctc.ave.pth")
    weight, bias = state["ctc.ctc_lo.weight"], state["ctc.ctc_lo.bias"]
    weight.zero_()
    bias.fill_(-1000.0)
    # logit_k = 4 (slope_k e + intercept_k): lines crossing at 13, 16 and 17.5
    for token, slope, intercept in [(0, 0, 0.0), (3, 1, -13.0), (4, 2, -29.0), (5, 3, -46.5)]:
        weight[token, :80] = 4 * slope / 80
        bias[token] = 4 * intercept
    torch.save(state, exp / "valid.cer_ctc.ave.pth")
    write_record(exp, DecodingOptions(beam_size=4))  # as stage 5 records its choice
    return exp


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(0, 3000, int(seconds * RATE))
            .clip(-32768, 32767).astype(np.int16))


def assert_same_model(exp: Path) -> None:
    """cvasr.models.loader builds what espnet2's task builds: same parameters, same outputs."""
    from cvasr.models.loader import load_model
    from cvasr.training.task import CvasrASRTask

    ours, _ = load_model(exp / "config.yaml", exp / "valid.cer_ctc.ave.pth")
    theirs, _ = CvasrASRTask.build_model_from_file(exp / "config.yaml",
                                                   exp / "valid.cer_ctc.ave.pth", "cpu")
    theirs.eval()
    assert type(ours) is type(theirs)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [type(m) for m in ours.modules()] == [type(m) for m in theirs.modules()]
    batch = torch.from_numpy(np.stack([noise(3.0, 1), noise(3.0, 2)]).astype(np.float32))
    lengths = torch.tensor([3 * RATE, 2 * RATE])
    with torch.no_grad():
        (x, xl), (y, yl) = ours.encode(batch, lengths), theirs.encode(batch, lengths)
    assert torch.equal(xl, yl) and torch.equal(x, y)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["local_exp", "wav2vec2_exp"])
def test_model_built_from_its_config_is_espnet2s(which: str,
                                                 request: pytest.FixtureRequest) -> None:
    assert_same_model(request.getfixturevalue(which))


@pytest.mark.slow
def test_weights_of_another_model_are_refused(local_exp: Path, tmp_path: Path) -> None:
    from cvasr.models.loader import load_model

    state = torch.load(local_exp / "valid.cer_ctc.ave.pth")
    state["extra.weight"] = torch.zeros(2)
    del state["ctc.ctc_lo.bias"]
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other.pth does not hold the model config.yaml "
                                         r"describes: 1 parameter\(s\) missing \(e.g. "
                                         r"ctc.ctc_lo.bias\), 1 unexpected \(e.g. extra.weight\)"):
        load_model(local_exp / "config.yaml", tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pth: not a model file torch can read"):
        load_model(local_exp / "config.yaml", tmp_path / "junk.pth")


@pytest.mark.slow
def test_windows_of_a_real_model_give_its_frames_of_the_whole_input(local_exp: Path) -> None:
    """With a real espnet2 model whose frames depend on nearby audio only, 2-second windows
    stitched give, frame for frame, what the model gives for the whole 13 s at once. (One
    window a batch: in a batch, the input's last frames would see the batch's zero padding
    where the whole input has its end.)"""
    from cvasr.decoding.decoder import CTCDecoder
    from cvasr.decoding.options import DecodingOptions

    decoder = CTCDecoder(local_exp, device="cpu")
    assert decoder.frame_shift_samples == 160  # fbank: 10 ms a frame, no subsampling
    x = noise(13.0)
    windowed = DecodingOptions(window=2.0, window_overlap=0.5)
    assert len(decoder.windows(len(x), windowed)) == 9
    [whole] = decoder.all_log_probs([x], 1, DecodingOptions(window=60.0))
    [stitched] = decoder.all_log_probs([x], 1, windowed)
    assert stitched.shape == whole.shape
    np.testing.assert_allclose(stitched, whole, atol=1e-4)


@pytest.mark.slow
def test_lazy_s3prl_hub_answers_as_the_real_one() -> None:
    """Every name the lazy hub indexes is the very object the real hub has under that name."""
    code = ("import importlib, s3prl.hub as real\n"
            "from cvasr.models.s3prl_hub import index\n"
            "names = index()\n"
            "assert set(names) <= set(real.options()), set(names) - set(real.options())\n"
            "bad = [n for n, m in names.items()\n"
            "       if getattr(importlib.import_module(m), n) is not getattr(real, n)]\n"
            "print(len(names), bad)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=ENV, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    count, bad = run.stdout.splitlines()[-1].split(maxsplit=1)  # after espnet2's own chatter
    assert int(count) > 150 and bad == "[]"


def test_arrays_are_converted_as_files_are(tmp_path: Path) -> None:
    from cvasr.data.audio import array_to_16k, load_16k

    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, (44100, 2)).astype(np.float32)
    sf.write(tmp_path / "a.wav", stereo, 44100, subtype="FLOAT")
    np.testing.assert_array_equal(array_to_16k(stereo, 44100), load_16k(tmp_path / "a.wav"))
    pcm = (stereo[:, 0] * 32768).astype(np.int16)
    assert array_to_16k(pcm, 16000) is pcm  # the dump's format: taken as it is
    sf.write(tmp_path / "pcm.wav", pcm[:, None].repeat(2, axis=1), 16000, subtype="PCM_16")
    np.testing.assert_array_equal(array_to_16k(pcm[:, None].repeat(2, axis=1), 16000),
                                  load_16k(tmp_path / "pcm.wav"))
    for bad, rate, why in [(np.zeros(0), 16000, "no audio"), (stereo.T, 44100, "samples, channels"),
                           (stereo, 0, "positive whole number"), (stereo, 16000.5, "whole number"),
                           (np.array([np.nan, 0.0]), 16000, "NaN"),
                           (np.array(["a"]), 16000, "must hold numbers")]:
        with pytest.raises(ValueError, match=why):
            array_to_16k(bad, rate)


def test_files_are_read_a_block_at_a_time_into_the_whole_decodes_samples(
        small_release: Path, tmp_path: Path) -> None:
    """load_16k decodes and resamples in 10-second blocks; the oracle is to_mono_16k of the
    whole decode at once (stage 2's conversion before)."""
    from cvasr.data.audio import load_16k, read_audio, to_mono_16k

    rng = np.random.default_rng(0)
    long_files = []
    for rate, channels, subtype in [(44100, 2, "FLOAT"), (16000, 1, "PCM_16"), (8000, 3, None)]:
        long_files.append(tmp_path / f"{rate}.flac" if subtype is None else
                          tmp_path / f"{rate}.wav")
        sf.write(long_files[-1], rng.uniform(-0.6, 0.6, (rate * 25 + 7, channels)), rate,
                 subtype=subtype)
    for path in [*sorted(small_release.glob("clips/*.mp3"))[:10], *long_files]:
        audio, info = read_audio(path)
        np.testing.assert_array_equal(load_16k(path), to_mono_16k(audio, info.rate))


@pytest.mark.slow
def test_decoding_imports_no_task_and_prints_nothing(local_exp: Path, tmp_path: Path) -> None:
    """A fresh interpreter transcribes without importing espnet2's tasks (g2p_en, transformers,
    ...), and neither the model's building nor its forward pass writes anything to stdout or
    stderr (espnet2's forward raises a deprecation warning the decoder drops)."""
    sf.write(tmp_path / "x.wav", noise(25.0), RATE, subtype="PCM_16")
    code = ("import sys\n"
            "from cvasr import Transcriber\n"
            f"t = Transcriber({str(local_exp)!r})\n"
            f"r = t.transcribe({str(tmp_path / 'x.wav')!r})\n"
            "from cvasr.offline import DeferredModule\n"
            # g2p_en's stand-in (cvasr.offline) is there from `import cvasr` on: not imported
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules\n"
            "         and not isinstance(sys.modules[m], DeferredModule)]\n"
            "sys.stderr.write(repr(heavy) + chr(10))\n")
    run = subprocess.run([sys.executable, "-c", code],
                         capture_output=True, text=True, env=ENV, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout == "" and run.stderr == "[]\n"


# --- with a tiny trained model (stages 1-4 on the small demo corpus, as tests/test_training.py)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, small_release: Path) -> dict[str, Path]:
    from cvasr.data.dump import DumpConfig, dump
    from cvasr.data.prepare import prepare_data
    from cvasr.decoding.options import DecodingOptions, write_record
    from cvasr.lm.ngram import build_lm
    from cvasr.text.tokens import make_token_list
    from cvasr.training.stages import collect_stats, resolve_config, train

    work = tmp_path_factory.mktemp("trained")
    prepare_data(small_release, work / "data", show_progress=False)
    dump(work / "data", work / "dump", DumpConfig(), show_progress=False)
    tokens = make_token_list(work / "dump" / "train" / "text", work / "token_list")
    resolve_config(RECIPE / "conf" / "train_demo_ctc.yaml", "s3prl:mel", work / "dl",
                   work / "demo.yaml")
    collect_stats(work / "dump", tokens, work / "demo.yaml", work / "stats")
    exp = work / "exp"
    train(work / "dump", tokens, work / "stats", work / "demo.yaml", exp,
          extra_args=["--batch_size", "8", "--num_workers", "0", "--max_epoch", "2"])
    dumped = work / "dump"
    build_lm(work / "lm", [dumped / "train" / "text"], [dumped / "dev" / "text",
                                                         dumped / "test" / "text"], order=3)
    # as stage 5 records its choice (so that transcribe loads the LM)
    write_record(exp, DecodingOptions(beam_size=4, lm=str(work / "lm"), lm_weight=1.0,
                                      word_bonus=2.0))
    return {"exp": exp, "dump": dumped}


def dumped_clips(dump: Path, *splits: str) -> list[tuple[str, np.ndarray]]:
    import kaldiio

    return [(utt, samples) for split in splits
            for utt, (_, samples) in kaldiio.load_scp(str(dump / split / "wav.scp")).items()]


@pytest.mark.slow
def test_trained_model_built_from_its_config_is_espnet2s(trained: dict[str, Path]) -> None:
    assert_same_model(trained["exp"])


def cvasr(*args: str) -> subprocess.CompletedProcess:
    """The console script as a user runs it: a fresh process."""
    return subprocess.run([sys.executable, "-m", "cvasr.cli", *args], capture_output=True,
                          text=True, env=ENV, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["trained", "loudness"])
def test_transcribe_prints_transcripts_only_and_one_line_per_bad_file(
        which: str, request: pytest.FixtureRequest, small_release: Path,
        tmp_path: Path) -> None:
    """With the trained transformer (whose espnet2 modules print at import) and with the
    oracle model (whose texts are not empty), each with the decoding recorded in it."""
    from cvasr import Transcriber

    if which == "trained":
        exp = request.getfixturevalue("trained")["exp"]
    else:
        exp = request.getfixturevalue("loudness_exp")
    clips = sorted(small_release.glob("clips/*.mp3"))
    good1 = tmp_path / "good one.wav"  # a wav at another rate, with a space in its name
    audio, rate = sf.read(clips[0])
    sf.write(good1, audio, rate)
    good2 = clips[1]
    missing, empty, folder, garbage = (tmp_path / "missing.mp3", tmp_path / "empty.wav",
                                       tmp_path / "a folder", tmp_path / "garbage.mp3")
    empty.write_bytes(b"")
    folder.mkdir()
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    # the same decoding in this process: the recorded choice, the same batch
    texts = [t.text for t in Transcriber(exp).transcribe_many([good1, good2])]
    if which == "loudness":  # real text, and the recorded beam search's, not greedy's
        greedy = [t.text for t in Transcriber(exp, beam_size=1).transcribe_many([good1, good2])]
        assert all(texts) and texts != greedy

    run = cvasr("transcribe", "--model", str(exp), str(good1), str(missing), str(empty),
                str(folder), str(garbage), str(good2))
    assert run.stdout == f"{good1}\t{texts[0]}\n{good2}\t{texts[1]}\n"
    assert run.stderr.splitlines() == [
        f"cvasr transcribe: {missing}: audio file not found",
        f"cvasr transcribe: {empty}: audio file is empty (0 bytes)",
        f"cvasr transcribe: {folder}: is a directory, not an audio file",
        f"cvasr transcribe: {garbage}: undecodable audio (not a readable mp3/wav/flac file)"]
    assert run.returncode == 1

    run = cvasr("transcribe", "--model", str(exp), str(good1), str(good2))
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout == f"{good1}\t{texts[0]}\n{good2}\t{texts[1]}\n"

    run = cvasr("transcribe", "--model", str(exp), "--segments", str(good1))
    assert (run.returncode, run.stderr) == (0, "")
    fields = [line.split("\t") for line in run.stdout.splitlines()]
    assert all(len(f) == 4 and f[0] == str(good1) for f in fields)
    assert " ".join(f[3] for f in fields) == texts[0]
    assert all(0 <= float(f[1]) < float(f[2]) <= len(audio) / rate for f in fields)


@pytest.mark.slow
def test_checkpoint_picks_the_model_file(trained: dict[str, Path], tmp_path: Path) -> None:
    from cvasr import Transcriber
    from cvasr.decoding.options import DecodingOptions

    exp = trained["exp"]
    wavs = [samples for _, samples in dumped_clips(trained["dump"], "dev")]

    def logps(checkpoint: str | Path | None) -> list[np.ndarray]:
        t = Transcriber(exp, checkpoint=checkpoint, lm=None)
        assert t.model_file.name == Path(checkpoint or "valid.cer_ctc.ave.pth").name
        return t.decoder.all_log_probs(wavs, 8, DecodingOptions())

    latest = logps("latest.pth")
    # the training checkpoint's model entry is the last epoch's weights, as latest.pth
    for a, b in zip(latest, logps("checkpoint.pth")):
        np.testing.assert_array_equal(a, b)
    first = logps(exp / "1epoch.pth")  # a path works as well as a name
    assert not all(np.array_equal(a, b) for a, b in zip(latest, first))
    assert not all(np.array_equal(a, b) for a, b in zip(latest, logps(None)))

    run = cvasr("transcribe", "--model", str(exp), "--checkpoint", "nope.pth", str(tmp_path))
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith("cvasr transcribe: error: checkpoint nope.pth not found (as a "
                                 f"path, nor in {exp}, which holds: 1epoch.pth, ")
    assert len(run.stderr.splitlines()) == 1
    run = cvasr("transcribe", "--model", str(exp), "--checkpoint", "1epoch.pth",
                str(tmp_path / "missing.wav"))
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr == f"cvasr transcribe: {tmp_path / 'missing.wav'}: audio file not found\n"
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pth")  # another model's
    run = cvasr("transcribe", "--model", str(exp), "--checkpoint", str(tmp_path / "other.pth"),
                str(tmp_path / "missing.wav"))
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith(f"cvasr transcribe: error: {tmp_path / 'other.pth'} does not "
                                 "hold the model config.yaml describes: ")
    assert len(run.stderr.splitlines()) == 1  # nothing of espnet2's building before it


@pytest.mark.slow
def test_python_api_transcribes_paths_and_arrays(loudness_exp: Path, small_release: Path,
                                                 tmp_path: Path) -> None:
    import soxr

    from cvasr import Transcriber, Transcript
    from cvasr.data.audio import AudioError, load_16k

    asr = Transcriber(loudness_exp)
    clip = sorted(small_release.glob("clips/*.mp3"))[0]
    from_file = asr.transcribe(clip)
    assert isinstance(from_file, Transcript) and from_file.text
    samples = load_16k(clip)
    assert from_file.duration == pytest.approx(len(samples) / RATE)
    assert from_file.text == " ".join(s.text for s in from_file.segments)
    assert asr.transcribe(samples, rate=RATE) == from_file  # the same samples as an array
    # 44.1 kHz stereo float, another resampling of the same sound: the same text
    stereo = soxr.resample(samples.astype(np.float32) / 32768, RATE, 44100)
    assert asr.transcribe(np.stack([stereo, stereo], axis=1), rate=44100).text == from_file.text
    with pytest.raises(ValueError, match="needs its sample rate"):
        asr.transcribe(samples)
    with pytest.raises(AudioError, match="missing.wav: audio file not found"):
        asr.transcribe(tmp_path / "missing.wav")
    results = list(asr.transcribe_files([clip, tmp_path / "missing.wav", clip], group=2))
    assert [r.error for r in results] == [None, "audio file not found", None]
    assert results[0].transcript == results[2].transcript == from_file


@pytest.mark.slow
def test_long_audio_text_is_its_parts_texts_and_segments_lie_in_them(
        loudness_exp: Path, small_release: Path) -> None:
    """36 demo clips with a second of silence after each (3 minutes) through the oracle model
    in 8-second windows: every segment lies within one clip (the pauses between clips are
    cut; a clip's own long pause may be too), and each clip's segments read its own text."""
    from cvasr import Transcriber
    from cvasr.data.audio import load_16k

    clips = [load_16k(p) for p in sorted(small_release.glob("clips/*.mp3"))][:36]
    # each clip starts on a whole frame (10 ms), as it does alone: framing from another
    # sample on would give other frames, another text
    gaps = [np.zeros(RATE + (-len(c)) % 160, dtype=np.int16) for c in clips]
    spans, pos = [], 0
    for samples, gap in zip(clips, gaps):
        spans.append((pos / RATE, (pos + len(samples)) / RATE))
        pos += len(samples) + len(gap)
    long_audio = np.concatenate([part for pair in zip(clips, gaps) for part in pair])
    asr = Transcriber(loudness_exp, window=8.0, window_overlap=2.0, lm=None, beam_size=1)
    assert len(asr.decoder.windows(len(long_audio), asr.options)) > 25
    parts = [t.text for t in asr.transcribe_many(clips, rate=RATE)]
    assert all(set(p) == set("abc") for p in parts)  # the model never writes a space
    result = asr.transcribe(long_audio, rate=RATE)
    assert result.duration == pytest.approx(len(long_audio) / RATE)
    assert result.text == " ".join(s.text for s in result.segments)
    home = [[k for k, (a, b) in enumerate(spans) if a <= s.start < s.end <= b]
            for s in result.segments]
    assert all(len(h) == 1 for h in home), [s for s, h in zip(result.segments, home) if not h]
    assert ["".join(s.text for s, h in zip(result.segments, home) if h == [k])
            for k in range(len(clips))] == parts
    assert len(result.segments) < 1.2 * len(clips)
    # prefix beam search cuts the same segments (at the best path's pauses; their times come
    # from its own labelling's alignment); a clip read as one segment reads as alone
    beam = Transcriber(loudness_exp, window=8.0, window_overlap=2.0, lm=None, beam_size=4)
    beam_parts = [t.text for t in beam.transcribe_many(clips, rate=RATE)]
    beam_segments = beam.transcribe(long_audio, rate=RATE).segments
    assert len(beam_segments) == len(result.segments)
    whole = [k for k in range(len(clips)) if home.count([k]) == 1]
    assert len(whole) > 25 and beam_parts != parts
    assert all(beam_segments[home.index([k])].text == beam_parts[k] for k in whole)


@pytest.mark.slow
def test_decode_cuts_a_long_utterance_as_transcribe_does_and_again_from_kept_logp(
        loudness_exp: Path, small_release: Path, tmp_path: Path) -> None:
    """A data dir with a 70-second utterance: decode reads it in windows and segments, as
    transcribe does, keeps the frame shift with the log-posteriors, and searching those again
    (as stage 5 does with the LM) cuts the same segments."""
    import kaldiio

    from cvasr import Transcriber
    from cvasr.data.audio import load_16k
    from cvasr.data.kaldi import read_table
    from cvasr.decoding.decoder import CTCDecoder, decode_data_dir, decode_log_probs
    from cvasr.decoding.options import DecodingOptions

    clips = [load_16k(p) for p in sorted(small_release.glob("clips/*.mp3"))[:20]]
    gap = np.zeros(RATE // 2, dtype=np.int16)
    utts = {"spk-long": np.concatenate([x for c in clips for x in (c, gap)]),
            "spk-short1": clips[0], "spk-short2": clips[1]}
    data = tmp_path / "data"
    data.mkdir()
    kaldiio.save_ark(str(data / "wav.ark"), {u: (RATE, x) for u, x in utts.items()},
                     scp=str(data / "wav.scp"))
    # one piece a batch: in a batch, an input's last frames see the batch's padding
    options = DecodingOptions(beam_size=4, batch_size=1)
    decode_data_dir(CTCDecoder(loudness_exp), data, tmp_path / "decode", options,
                    save_logp=True)
    texts = read_table(tmp_path / "decode" / "text")
    asr = Transcriber(loudness_exp, options=options)
    assert texts == {u: asr.transcribe(x, rate=RATE).text for u, x in utts.items()}
    assert texts["spk-long"].count(" ") >= 10  # searched in segments
    assert (tmp_path / "decode" / "frame_shift").read_text() == "0.01\n"
    again = decode_log_probs(asr.decoder.tokens, tmp_path / "decode" / "logp.scp",
                             tmp_path / "again", options)
    assert read_table(again) == texts
