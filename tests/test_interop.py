"""Moving models in and out: transformers' Wav2Vec2 (import-hf, import-hf-upstream, export-hf, the
word LM for pyctcdecode), stock espnet2 (Speech2Text, the pack command), ONNX (onnxruntime,
sherpa-onnx). The oracles are the real tools, on tiny models built here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import editdistance
import numpy as np
import pytest
import torch

from conftest import RECIPE, REPO
from cvasr.cli import main
from cvasr.interop.hf_format import (FormatError, hf_config_from_s3prl, hf_vocab_from_tokens,
                                     rename, s3prl_cfg_from_hf, tokens_from_hf, weight_pairs)
from cvasr.models.upstream import ARCHS

N_CLIPS = 20


# ---- the pure mappings -----------------------------------------------------------------------

@pytest.mark.parametrize("norm, stable", [("layer", True), ("group", False)])
def test_converted_weights_give_transformers_hidden_states_exactly(norm: str, stable: bool) -> None:
    """XLS-R's layout and wav2vec 2.0 Base's: every weight maps 1:1, and s3prl's model with the
    renamed weights computes transformers' last_hidden_state on the same normalised input."""
    from s3prl.upstream.utils import merge_with_parent
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config as S3Config
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Model as S3Model
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=128, conv_dim=(32,) * 7, feat_extract_norm=norm,
                            do_stable_layer_norm=stable, conv_bias=stable,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                            codevector_dim=32, proj_codevector_dim=32,
                            num_codevectors_per_group=16)
    hf = Wav2Vec2Model(config).eval()
    model_cfg, task_cfg = s3prl_cfg_from_hf(config.to_dict(), do_normalize=True)
    assert task_cfg == {"sample_rate": 16000, "normalize": True}
    s3 = S3Model(merge_with_parent(S3Config, model_cfg)).eval()
    weights = rename(hf.state_dict(), weight_pairs(model_cfg), "hf")
    heads = set(s3.state_dict()) - set(weights)
    assert {k.split(".")[0] for k in heads} == {"quantizer", "project_q", "final_proj"}
    s3.load_state_dict({**s3.state_dict(), **weights}, strict=True)
    x = torch.randn(2, 8000)
    x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True, unbiased=False)
    with torch.no_grad():
        assert torch.equal(hf(x).last_hidden_state, s3.extract_features(x, None)["x"])
    # and back: the same transformers config
    back = hf_config_from_s3prl(merge_with_parent(S3Config, model_cfg))
    assert all(config.to_dict()[k] == v or list(config.to_dict()[k]) == v
               for k, v in back.items())


def test_xls_r_300m_shape_maps_both_ways() -> None:
    hf = hf_config_from_s3prl(ARCHS["xls_r_300m"])
    assert (hf["num_hidden_layers"], hf["hidden_size"], hf["num_attention_heads"],
            hf["intermediate_size"], hf["feat_extract_norm"], hf["do_stable_layer_norm"],
            hf["conv_bias"], hf["num_conv_pos_embeddings"],
            hf["num_conv_pos_embedding_groups"]) == (24, 1024, 16, 4096, "layer", True, True,
                                                      128, 16)
    model_cfg, _ = s3prl_cfg_from_hf(hf, do_normalize=True)
    for key in ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "conv_pos",
                "conv_pos_groups", "extractor_mode", "layer_norm_first", "final_dim"):
        assert model_cfg[key] == ARCHS["xls_r_300m"][key], key
    pairs = weight_pairs(model_cfg)
    assert pairs["encoder.layers.23.attention.q_proj.weight"] == "encoder.layers.23.self_attn.q_proj.weight"
    assert pairs["feature_extractor.conv_layers.6.layer_norm.bias"] == "feature_extractor.conv_layers.6.2.1.bias"
    assert pairs["encoder.pos_conv_embed.conv.parametrizations.weight.original1"] == "encoder.pos_conv.0.weight_v"
    with pytest.raises(FormatError, match="feat_extract_activation = 'relu'"):
        s3prl_cfg_from_hf({**hf, "feat_extract_activation": "relu"}, True)
    with pytest.raises(FormatError, match="model_type = 'hubert'"):
        s3prl_cfg_from_hf({**hf, "model_type": "hubert"}, True)


@pytest.mark.parametrize("pad_at", [0, 2, 5])
def test_vocabulary_maps_pad_to_blank_and_permutes_rows(pad_at: int) -> None:
    hf = ["a", "b", "|", "[UNK]", "c"]
    hf.insert(pad_at, "[PAD]")
    tokens, order = tokens_from_hf(hf, "[PAD]", "|", "[UNK]")
    assert tokens[0] == "<blank>" and order[0] == pad_at
    assert [hf[i] for i in order[1:]] == [t for t in hf if t != "[PAD]"]  # HF order kept
    assert sorted(tokens) == sorted(["<blank>", "a", "b", "<space>", "<unk>", "c"])
    # logits permuted by `order` are the same distribution, token for token
    logits = torch.randn(7, len(hf))
    ours = logits[:, order]
    for j, token in enumerate(tokens):
        name = {"<blank>": "[PAD]", "<space>": "|", "<unk>": "[UNK]"}.get(token, token)
        assert torch.equal(ours[:, j], logits[:, hf.index(name)])
    vocab = hf_vocab_from_tokens(tokens)
    assert vocab["[PAD]"] == 0 and vocab["|"] == tokens.index("<space>")
    with pytest.raises(FormatError, match="pad token '<pad>'"):
        tokens_from_hf(hf, "<pad>", "|", "[UNK]")
    with pytest.raises(FormatError, match="already has a token '<space>'"):
        tokens_from_hf([*hf, "<space>"], "[PAD]", "|", "[UNK]")
    with pytest.raises(FormatError, match="does not start with <blank>"):
        hf_vocab_from_tokens(["a", "<blank>"])


# ---- models built here -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def clips(small_release: Path) -> list[Path]:
    return sorted((small_release / "clips").glob("*.mp3"))[:N_CLIPS]


@pytest.fixture(scope="module")
def chars(small_release: Path) -> str:
    """The characters of the release's normalised sentences (the seed's vocabulary)."""
    from cvasr.text.normalize import get_normalizer

    normalize = get_normalizer("as")
    lines = (small_release / "validated.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return "".join(normalize(line.split("\t")[2]) for line in lines)


@pytest.fixture(scope="module")
def hf_ctc(tmp_path_factory: pytest.TempPathFactory, chars: str) -> Path:
    """A random-init transformers Wav2Vec2ForCTC of XLS-R's layout, the seed's vocab (blank last)."""
    from cvasr.interop.hf_random import write_random_hf_ctc

    out = tmp_path_factory.mktemp("hf") / "seed_style"
    write_random_hf_ctc(out, "tiny", chars, seed=0)
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    assert max(vocab, key=vocab.get) == "[PAD]"  # the blank last, as the seed's
    return out


@pytest.fixture(scope="module")
def imported(hf_ctc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    exp = tmp_path_factory.mktemp("imported") / "exp"
    assert main(["import-hf", "--model", str(hf_ctc), "--out", str(exp)]) == 0
    return exp


def hf_outputs(hf_dir: Path, wavs: list[np.ndarray]) -> tuple[list[str], list[torch.Tensor]]:
    """transformers' own processor + Wav2Vec2ForCTC + argmax: texts and logits, one clip at a
    time (int16 samples as floats in [-1, 1])."""
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    processor = Wav2Vec2Processor.from_pretrained(str(hf_dir))
    model = Wav2Vec2ForCTC.from_pretrained(str(hf_dir)).eval()
    texts, logits = [], []
    for wav in wavs:
        inputs = processor(wav.astype(np.float32) / 32768, sampling_rate=16000,
                           return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs).logits[0]
        logits.append(out)
        texts.append(processor.batch_decode(out.argmax(-1)[None])[0])
    return texts, logits


def same_text(hf_text: str, ours: str) -> bool:
    """transformers' text against ours: `[UNK]` is `<unk>` here, and transformers keeps the
    double space of a `| |` (blank between two delimiters) that ours collapses."""
    return " ".join(hf_text.replace("[UNK]", "<unk>").split()) == ours


def load_clips(paths: list[Path]) -> list[np.ndarray]:
    from cvasr.data.audio import load_16k

    return [load_16k(p) for p in paths]


@pytest.mark.slow
def test_import_hf_transcribes_as_transformers_does(imported: Path, hf_ctc: Path,
                                                    clips: list[Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The Done criterion: cvasr transcribe --beam 1 of the imported model gives transformers'
    processor + argmax transcript for >= 90% of the clips, characters differing <= 2%."""
    from cvasr.decoding.decoder import CTCDecoder

    capsys.readouterr()
    assert main(["transcribe", "--model", str(imported), "--beam", "1", "--no-lm",
                 *map(str, clips)]) == 0
    lines = capsys.readouterr().out.splitlines()
    ours = dict(line.split("\t", 1) for line in lines)
    assert list(ours) == list(map(str, clips))
    wavs = load_clips(clips)
    theirs, logits = hf_outputs(hf_ctc, wavs)
    # the comparison means something: varied transcripts with words, not one token or noise
    assert len(set(theirs)) == len(clips)
    assert all(t.strip() for t in theirs) and np.mean([len(t.split()) for t in theirs]) >= 3
    blank = json.loads((hf_ctc / "vocab.json").read_text(encoding="utf-8"))["[PAD]"]
    blank_share = float(np.mean([(lg.argmax(-1) == blank).float().mean() for lg in logits]))
    assert 0.2 < blank_share < 0.9, blank_share

    same = sum(same_text(t, ours[str(c)]) for c, t in zip(clips, theirs))
    errors = sum(editdistance.eval(" ".join(t.replace("[UNK]", "<unk>").split()), ours[str(c)])
                 for c, t in zip(clips, theirs))
    chars = sum(len(" ".join(t.replace("[UNK]", "<unk>").split())) for t in theirs)
    assert same >= 0.9 * len(clips), (same, len(clips))
    assert errors <= 0.02 * chars, (errors, chars)

    # the log-posteriors too, rows permuted to the HF vocabulary's order
    record = json.loads((imported / "hf_import.json").read_text(encoding="utf-8"))
    decoder = CTCDecoder(imported, device="cpu")
    order = [record["hf_id_of_token"][t] for t in decoder.token_list]
    assert order[0] == blank and decoder.token_list[0] == "<blank>"
    for wav, lg in zip(wavs, logits):
        ref = torch.log_softmax(lg, -1)[:, order]
        logp = decoder.log_probs([wav])[0]
        # the encoder's frames, and s3prl's copies of the last one up to ceil(samples / 320)
        assert (ref.shape[0], logp.shape[0]) == ((len(wav) - 80) // 320, -(-len(wav) // 320))
        assert (logp[: ref.shape[0]] - ref).abs().max() < 1e-3


@pytest.mark.slow
def test_import_hf_reads_a_legacy_bin_checkpoint(hf_ctc: Path, imported: Path,
                                                 tmp_path: Path) -> None:
    """pytorch_model.bin with transformers 4.x's weight-norm names (weight_g, weight_v), as
    older checkpoints (the seed's time) hold them: the same experiment as from safetensors."""
    import shutil

    from safetensors.torch import load_file

    legacy = tmp_path / "legacy"
    shutil.copytree(hf_ctc, legacy, ignore=shutil.ignore_patterns("model.safetensors"))
    state = load_file(str(hf_ctc / "model.safetensors"))
    old_names = {k.replace("parametrizations.weight.original0", "weight_g")
                 .replace("parametrizations.weight.original1", "weight_v"): v
                 for k, v in state.items()}
    assert "wav2vec2.encoder.pos_conv_embed.conv.weight_g" in old_names
    torch.save(old_names, legacy / "pytorch_model.bin")
    assert main(["import-hf", "--model", str(legacy), "--out", str(tmp_path / "exp")]) == 0
    a = torch.load(tmp_path / "exp" / "latest.pth", weights_only=True)
    b = torch.load(imported / "latest.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_export_hf_of_an_import_gives_the_original_logits(imported: Path, hf_ctc: Path,
                                                          clips: list[Path],
                                                          tmp_path: Path) -> None:
    from transformers import pipeline

    out = tmp_path / "hf"
    assert main(["export-hf", "--model", str(imported), "--out", str(out)]) == 0
    wavs = load_clips(clips[:6])
    texts, logits = hf_outputs(out, wavs)
    original_texts, original = hf_outputs(hf_ctc, wavs)
    old = json.loads((hf_ctc / "vocab.json").read_text(encoding="utf-8"))
    new = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    assert new["[PAD]"] == 0 and set(new) == set(old)
    perm = [old[t] for t in sorted(new, key=new.get)]
    for a, b in zip(original, logits):
        assert (a[:, perm] - b).abs().max() < 1e-3
    assert texts == original_texts
    # the pipeline loads it offline and decodes as the processor does
    asr = pipeline("automatic-speech-recognition", model=str(out), device="cpu")
    assert [asr(w.astype(np.float32) / 32768)["text"] for w in wavs[:3]] == texts[:3]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, small_release: Path,
            tiny_upstream: Path) -> Path:
    """A stage-4 experiment of the XLS-R config on the tiny wav2vec 2.0 (one epoch)."""
    from cvasr.data.dump import DumpConfig, dump
    from cvasr.data.prepare import prepare_data
    from cvasr.text.tokens import make_token_list
    from cvasr.training.stages import collect_stats, resolve_config, train

    work = tmp_path_factory.mktemp("trained")
    prepare_data(small_release, work / "data", show_progress=False)
    dump(work / "data", work / "dump", DumpConfig(), show_progress=False)
    tokens = make_token_list(work / "dump" / "train" / "text", work / "token_list")
    config = work / "xlsr.yaml"
    resolve_config(RECIPE / "conf" / "train_xlsr300m_ctc.yaml", str(tiny_upstream), work / "dl",
                   config)
    collect_stats(work / "dump", tokens, config, work / "stats")
    exp = work / "exp"
    train(work / "dump", tokens, work / "stats", config, exp,
          extra_args=["--batch_size", "8", "--num_workers", "0", "--max_epoch", "1",
                      "--use_amp", "false"])
    return exp


@pytest.mark.slow
def test_round_trip_ours_to_hf_to_ours_keeps_the_logits(trained: Path, clips: list[Path],
                                                        tmp_path: Path) -> None:
    from cvasr.decoding.decoder import CTCDecoder

    hf_dir, back = tmp_path / "hf", tmp_path / "back"
    assert main(["export-hf", "--model", str(trained), "--out", str(hf_dir)]) == 0
    assert main(["import-hf", "--model", str(hf_dir), "--out", str(back)]) == 0
    ours, again = CTCDecoder(trained, device="cpu"), CTCDecoder(back, device="cpu")
    assert again.token_list == ours.token_list
    wavs = load_clips(clips[:5])
    for a, b in zip(ours.all_log_probs(wavs, 2), again.all_log_probs(wavs, 2)):
        assert np.abs(a - b).max() < 1e-5
    # and transformers on the exported directory: the same numbers up to the waveform
    # normalisation's eps (1e-7 on [-1, 1] there, 1e-5 on the int16 scale here)
    _, logits = hf_outputs(hf_dir, wavs)
    for a, lg in zip(ours.all_log_probs(wavs, 2), logits):
        ref = torch.log_softmax(lg, -1).numpy()
        assert np.abs(a[: len(ref)] - ref).max() < 1e-3


def pyctcdecode_python() -> Path | None:
    """The Python of a venv with pyctcdecode (it pins numpy<2, so not the recipe's)."""
    candidates = [os.environ.get("CVASR_PYCTCDECODE_VENV"), REPO / ".venv-lmbench",
                  (REPO / ".venv").resolve().parent / ".venv-lmbench"]
    for venv in filter(None, candidates):
        python = Path(venv) / "bin" / "python"
        if python.is_file():
            return python
    return None


@pytest.mark.slow
def test_export_hf_writes_the_lm_for_processor_with_lm(imported: Path, clips: list[Path],
                                                       small_release: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    from cvasr.data.prepare import prepare_data
    from cvasr.decoding.decoder import CTCDecoder, Search
    from cvasr.decoding.options import DecodingOptions, write_record
    from cvasr.lm.ngram import build_lm

    data = tmp_path / "data"
    prepare_data(small_release, data, show_progress=False)
    lm = tmp_path / "lm"
    build_lm(lm, [data / "train" / "text"], [data / "dev" / "text", data / "test" / "text"],
             order=3)
    exp = tmp_path / "exp"
    shutil.copytree(imported, exp)
    options = DecodingOptions(lm=str(lm), lm_weight=0.75, word_bonus=2.0, lm_beam_size=20,
                              unk_offset=-7.5)
    write_record(exp, options)
    out = tmp_path / "hf"
    assert main(["export-hf", "--model", str(exp), "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "language_model").iterdir()) == [
        "attrs.json", "lm.bin", "unigrams.txt"]
    assert json.loads((out / "language_model" / "attrs.json").read_text()) == {
        "alpha": 0.75, "beta": 2.0, "unk_score_offset": -7.5, "score_boundary": True}
    conf = json.loads((out / "processor_config.json").read_text())
    assert conf["processor_class"] == "Wav2Vec2ProcessorWithLM"

    # without pyctcdecode (the recipe's venv) the pipeline still loads, decoding greedily
    from transformers import pipeline

    assert pipeline("automatic-speech-recognition", model=str(out), device="cpu")

    python = pyctcdecode_python()
    if python is None:
        pytest.skip("no venv with pyctcdecode (CVASR_PYCTCDECODE_VENV or .venv-lmbench)")
    decoder = CTCDecoder(exp, device="cpu")
    logps = decoder.all_log_probs(load_clips(clips[:8]), 4)
    ours = [Search(decoder.tokens, options)(x).text for x in logps]
    np.savez(tmp_path / "logp.npz", *logps)
    script = (
        "import json, sys, numpy as np\n"
        "from pyctcdecode import BeamSearchDecoderCTC\n"
        "d = BeamSearchDecoderCTC.load_from_dir(sys.argv[1], unigram_encoding='utf-8')\n"
        "logps = np.load(sys.argv[2])\n"
        "print(json.dumps([' '.join(d.decode_beams(logps[f'arr_{i}'], beam_width=20, "
        "beam_prune_logp=-10.0, token_min_logp=-5.0, prune_history=True)[0][0].split()) "
        "for i in range(len(logps.files))], ensure_ascii=False))\n")
    proc = subprocess.run([str(python), "-c", script, str(out), str(tmp_path / "logp.npz")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout.splitlines()[-1])
    assert theirs == ours  # both spell an unknown token as pyctcdecode does (⁇)
    assert any(t != Search(decoder.tokens, DecodingOptions())(x).text
               for t, x in zip(ours, logps))  # the LM changed something: a real check


@pytest.mark.slow
def test_onnx_export_matches_pytorch_and_decodes_in_sherpa_onnx(imported: Path,
                                                                clips: list[Path],
                                                                tmp_path: Path) -> None:
    import onnxruntime
    import sherpa_onnx

    from cvasr.decoding.decoder import CTCDecoder, Search
    from cvasr.decoding.options import DecodingOptions

    out = tmp_path / "onnx"
    assert main(["export-onnx", "--model", str(imported), "--out", str(out)]) == 0
    tokens = (out / "tokens.txt").read_text(encoding="utf-8").splitlines()
    decoder = CTCDecoder(imported, device="cpu")
    assert tokens[0] == "<blank> 0" and len(tokens) == len(decoder.token_list)
    assert f"\u2581 {decoder.token_list.index('<space>')}" in tokens
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    recognizer = sherpa_onnx.OfflineRecognizer.from_omnilingual_asr_ctc(
        model=str(out / "model.onnx"), tokens=str(out / "tokens.txt"))
    wavs = load_clips(clips)
    same = 0
    for wav in wavs:
        x = (wav.astype(np.float32) / 32768)[None]
        logits = session.run(None, {"waveform": x})[0]
        assert logits.shape[:2] == (1, (len(wav) - 80) // 320)  # the conv encoder's frames
        onnx_logp = torch.log_softmax(torch.from_numpy(logits[0]), -1)
        logp = decoder.log_probs([wav])[0]
        assert (logp[: len(onnx_logp)] - onnx_logp).abs().max() < 1e-3
        stream = recognizer.create_stream()
        stream.accept_waveform(16000, x[0])
        recognizer.decode_stream(stream)
        ours = Search(decoder.tokens, DecodingOptions())(logp.numpy()).text
        same += " ".join(stream.result.text.split()) == ours
    assert same >= 0.9 * len(wavs), same


SPEECH2TEXT = """
import json, sys
import numpy as np, soundfile, torch
from espnet2.bin.asr_inference import Speech2Text
import cvasr  # registers our frontend, encoder and model with espnet2
s2t = Speech2Text(asr_train_config=sys.argv[1], asr_model_file=sys.argv[2], device="cpu",
                  ctc_weight=1.0, beam_size=4)
wav = soundfile.read(sys.argv[3], dtype="int16")[0]
enc, _ = s2t.asr_model.encode(torch.from_numpy(wav.astype(np.float32))[None],
                              torch.tensor([len(wav)]))
np.save(sys.argv[4], s2t.asr_model.ctc.log_softmax(enc)[0].detach().numpy())
print(json.dumps(s2t(wav.astype(np.float32))[0][0], ensure_ascii=False))
"""

# the documented two lines (README, "Exporting"), run in a fresh interpreter
PACKED = """
from espnet2.bin.asr_inference import Speech2Text; from espnet2.main_funcs.pack_funcs import unpack; import cvasr, soundfile, sys
print(Speech2Text(**unpack(sys.argv[1], "unpacked"), ctc_weight=1.0, beam_size=4)(soundfile.read(sys.argv[2], dtype="int16")[0])[0][0])
"""


def python(*args: str | Path, cwd: Path | None = None) -> str:
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()[-1]


@pytest.mark.slow
def test_stock_espnet2_builds_a_trained_experiment_and_its_portable_copy(
        trained: Path, clips: list[Path], tmp_path: Path) -> None:
    """espnet2's own ASRTask (what Speech2Text calls) builds a stage-4 experiment, whose config
    names the upstream checkpoint by path, and `export-espnet`'s copy, which names none."""
    from espnet2.tasks.asr import ASRTask

    from cvasr.decoding.decoder import CTCDecoder
    from cvasr.interop.experiment import model_file_of

    wav = torch.from_numpy(load_clips(clips[:1])[0].astype(np.float32))[None]
    ours = CTCDecoder(trained, device="cpu").log_probs([wav[0].numpy()])[0]

    def stock_logp(exp: Path) -> torch.Tensor:
        model, _ = ASRTask.build_model_from_file(exp / "config.yaml", model_file_of(exp), "cpu")
        with torch.no_grad():
            enc, _ = model.eval().encode(wav, torch.tensor([wav.shape[1]]))
            return model.ctc.log_softmax(enc)[0]

    assert torch.equal(stock_logp(trained), ours)
    portable = tmp_path / "portable"
    assert main(["export-espnet", "--model", str(trained), "--out", str(portable)]) == 0
    config = (portable / "config.yaml").read_text(encoding="utf-8")
    assert "upstream: wav2vec2_inline" in config and "path_or_url" not in config
    assert "path_or_url" in (trained / "config.yaml").read_text(encoding="utf-8")
    assert torch.equal(stock_logp(portable), ours)


@pytest.mark.slow
def test_speech2text_and_espnet2_pack_in_fresh_interpreters(imported: Path, clips: list[Path],
                                                            tmp_path: Path) -> None:
    """Stock Speech2Text on an experiment after `import cvasr` and nothing else; espnet2's pack
    command on it; the README's two lines decode the zip elsewhere to Speech2Text's text."""
    import soundfile as sf

    from cvasr.decoding.decoder import CTCDecoder
    from cvasr.interop.experiment import model_file_of

    wav = load_clips(clips[:1])[0]
    sf.write(tmp_path / "clip.wav", wav, 16000, subtype="PCM_16")
    text = json.loads(python("-c", SPEECH2TEXT, imported / "config.yaml",
                             model_file_of(imported), tmp_path / "clip.wav",
                             tmp_path / "logp.npy"))
    ours = CTCDecoder(imported, device="cpu").log_probs([wav])[0].numpy()
    assert np.abs(np.load(tmp_path / "logp.npy") - ours).max() < 1e-5
    assert len(text.split()) >= 2  # a real transcript to compare

    zip_file = tmp_path / "asr.zip"
    subprocess.run([sys.executable, "-m", "espnet2.bin.pack", "asr", "--asr_train_config",
                    str(imported / "config.yaml"), "--asr_model_file",
                    str(model_file_of(imported)), "--outpath", str(zip_file)],
                   check=True, capture_output=True, cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert python("-c", PACKED, zip_file, tmp_path / "clip.wav", cwd=elsewhere).strip() == text.strip()


def test_exports_refuse_a_model_that_is_not_wav2vec2(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    exp = tmp_path / "demo_exp"
    exp.mkdir()
    conf = yaml.safe_load((RECIPE / "conf" / "train_demo_ctc.yaml").read_text())
    (exp / "config.yaml").write_text(yaml.safe_dump(conf))
    (exp / "valid.cer_ctc.ave.pth").write_bytes(b"")
    for command in ("export-hf", "export-onnx"):
        assert main([command, "--model", str(exp), "--out", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert f"{exp} is not a wav2vec 2.0 CTC experiment: its frontend is s3prl's 'mel' " \
               "upstream and its encoder is 'transformer'" in err[0]


def test_import_hf_refuses_what_it_cannot_read(tmp_path: Path, hf_ctc: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    def error(model: Path) -> str:
        assert main(["import-hf", "--model", str(model), "--out", str(tmp_path / "x")]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        return lines[0]

    assert "does not exist" in error(tmp_path / "missing")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.yaml").write_text("{}")
    assert "already holds an experiment (config.yaml); give a new folder" in error(hf_ctc)
    (tmp_path / "x" / "config.yaml").unlink()
    (tmp_path / "empty").mkdir()
    assert "not a transformers model directory (no config.json)" in error(tmp_path / "empty")
    hubert = tmp_path / "hubert"
    shutil.copytree(hf_ctc, hubert)
    config = json.loads((hubert / "config.json").read_text())
    (hubert / "config.json").write_text(json.dumps({**config, "model_type": "hubert"}))
    assert "holds a 'hubert' model, not wav2vec 2.0" in error(hubert)
    quiet = tmp_path / "quiet"  # transformers 5 nests the feature extractor's config
    shutil.copytree(hf_ctc, quiet)
    processor = json.loads((quiet / "processor_config.json").read_text())
    processor["feature_extractor"]["do_normalize"] = False
    (quiet / "processor_config.json").write_text(json.dumps(processor))
    assert "does not normalise the waveform" in error(quiet)
    (quiet / "processor_config.json").unlink()  # transformers 4's file
    (quiet / "preprocessor_config.json").write_text(json.dumps(processor["feature_extractor"]))
    assert "does not normalise the waveform" in error(quiet)
    pretraining = tmp_path / "pretraining"
    shutil.copytree(hf_ctc, pretraining)
    (pretraining / "config.json").write_text(json.dumps(
        {**config, "architectures": ["Wav2Vec2ForPreTraining"]}))
    assert "without a CTC head" in error(pretraining)


@pytest.fixture(scope="module")
def hf_pretraining(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init transformers Wav2Vec2ForPreTraining of the tiny shape, XLS-R's layout."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining

    torch.manual_seed(3)
    out = tmp_path_factory.mktemp("hf_pretraining") / "xlsr_tiny"
    config = Wav2Vec2Config(**hf_config_from_s3prl(ARCHS["tiny"]),
                            architectures=["Wav2Vec2ForPreTraining"])
    Wav2Vec2ForPreTraining(config).save_pretrained(str(out))
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(str(out))
    return out


@pytest.mark.slow
def test_an_hf_pretraining_dir_becomes_an_s3prl_upstream(hf_pretraining: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from s3prl.nn import S3PRLUpstream
    from transformers import Wav2Vec2ForPreTraining

    from cvasr.models.upstream import inspect_upstream

    assert main(["check-upstream", str(hf_pretraining)]) == 0
    assert ("wav2vec 2.0 in transformers' format (Wav2Vec2ForPreTraining), 2 layers x 128"
            in capsys.readouterr().out)
    out = tmp_path / "converted.pt"
    assert main(["import-hf-upstream", "--model", str(hf_pretraining), "--out", str(out)]) == 0
    info = inspect_upstream(out)
    assert (info.format, info.layers, info.dim) == ("s3prl", 2, 128)
    hf = Wav2Vec2ForPreTraining.from_pretrained(str(hf_pretraining)).eval()
    state = torch.load(out, weights_only=False)["model_weight"]
    assert torch.equal(state["quantizer.vars"], hf.quantizer.codevectors)  # its own heads
    assert torch.equal(state["final_proj.weight"], hf.project_hid.weight)
    upstream = S3PRLUpstream("wav2vec2_custom", path_or_url=str(out)).eval()
    wav = torch.randn(1, 16000)
    with torch.no_grad():
        states, _ = upstream(wav, torch.tensor([16000]))
        normalised = (wav - wav.mean()) / torch.sqrt(wav.var(unbiased=False) + 1e-5)
        expected = hf.wav2vec2(normalised).last_hidden_state
    assert (states[-1][:, : expected.shape[1]] - expected).abs().max() < 1e-5

    # a Wav2Vec2Model has no heads: s3prl's come from a fresh model, the encoder is its own
    base = tmp_path / "base"
    hf.wav2vec2.save_pretrained(str(base))
    capsys.readouterr()
    assert main(["import-hf-upstream", "--model", str(base), "--out", str(tmp_path / "b.pt")]) == 0
    assert ("7 tensors it lacks (final_proj, project_q, quantizer) from a fresh model"
            in capsys.readouterr().out)
    converted = torch.load(tmp_path / "b.pt", weights_only=False)
    assert converted["cvasr"]["architecture"] == "Wav2Vec2Model"
    assert torch.equal(converted["model_weight"]["encoder.layers.1.fc2.weight"],
                       hf.wav2vec2.encoder.layers[1].feed_forward.output_dense.weight)
    assert S3PRLUpstream("wav2vec2_custom", path_or_url=str(tmp_path / "b.pt"))


def run_sh(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(RECIPE / "run.sh"), *map(str, args)], capture_output=True,
                          text=True, timeout=1200)
    if check and proc.returncode != 0:
        raise AssertionError(f"run.sh failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


@pytest.mark.slow
def test_run_sh_trains_from_an_hf_upstream_and_scores_an_imported_model(
        small_release: Path, hf_pretraining: Path, imported: Path, tmp_path: Path) -> None:
    import shutil

    from transformers import Wav2Vec2ForPreTraining

    work = tmp_path / "work"
    base = ["--cv_root", small_release, "--work_dir", work, "--ngpu", "0", "--nj", "2",
            "--upstream_ckpt", hf_pretraining]
    run_sh(*base, "--train_config", RECIPE / "conf" / "train_xlsr300m_ctc.yaml", "--stop_stage",
           "4", "--train_args", "--max_epoch 1 --batch_size 8 --num_workers 0 --use_amp false")
    converted = work / "downloads" / "upstream" / "xlsr_tiny.s3prl.pt"
    assert (work / "exp" / "stage0" / "upstream").read_text().strip() == str(converted)
    # stage 4 trained from it: the frozen feature encoder holds the transformers weights
    trained = torch.load(work / "exp" / "asr_train_xlsr300m_ctc_char" / "1epoch.pth",
                         weights_only=False)
    hf = Wav2Vec2ForPreTraining.from_pretrained(str(hf_pretraining))
    assert torch.equal(trained["frontend.upstream.upstream.model.feature_extractor."
                               "conv_layers.0.0.weight"],
                       hf.wav2vec2.feature_extractor.conv_layers[0].conv.weight)

    # stage 5 on an imported model
    exp = tmp_path / "imported"
    shutil.copytree(imported, exp)
    wrong = run_sh(*base, "--asr_exp", exp, check=False)
    assert wrong.returncode == 2 and "give --asr_exp with --stage 5" in wrong.stderr
    out = run_sh(*base, "--stage", "5", "--asr_exp", exp)
    assert "stage 5 (decode_and_score): done" in out.stdout
    for decode in ("decode_ctc/dev", "decode_ctc/test", "decode_ctc_lm/dev", "decode_ctc_lm/test"):
        assert (exp / decode / "score_cer" / "result.txt").is_file(), decode
    results = (work / "RESULTS.md").read_text(encoding="utf-8")
    assert "model: `../imported`" in results  # relative to RESULTS.md
    assert (exp / "decoding.yaml").is_file()  # stage 5's choice, for transcribe


@pytest.mark.slow
def test_gpu_import_script_smoke_run_on_cpu(tmp_path: Path) -> None:
    """bench/hf_interop_gpu.py (the XLS-R 300M check the lead runs on a GPU), tiny and on the CPU."""
    out = tmp_path / "hf_interop.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "hf_interop_gpu.py"), "--device",
                           "cpu", "--tiny", "--clips", "4", "--work", str(tmp_path / "work"),
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["ok"] and result["arch"] == "tiny" and result["clips"] == 4
    [row] = result["rows"]
    assert row["row"] == "cvasr decoder, fp32" and row["same_transcript"] == 4
    assert row["max_abs_logp_diff"] < 1e-3
    assert result["distinct_reference_transcripts"] == 4
    assert "| cvasr decoder, fp32 | 4/4 |" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("order", ["import cvasr; import espnet2.tasks.asr as task",
                                   "import espnet2.tasks.asr as task; import cvasr"])
def test_import_cvasr_registers_with_espnet2_in_either_order(order: str) -> None:
    code = (f"import sys; {order}\n"
            "assert 'cvasr_ctc' in task.model_choices.classes\n"
            "assert 'identity' in task.encoder_choices.classes\n"
            "assert 'wav2vec2_s3prl' in task.frontend_choices.classes\n"
            "print('registered')")
    assert python("-c", code) == "registered"
    # and `cvasr` alone does not import espnet2 (every cvasr command imports it)
    assert python("-c", "import sys, cvasr; print('espnet2' in sys.modules)") == "False"
