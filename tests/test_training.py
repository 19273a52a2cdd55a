"""Stages 3-4 with the real espnet2: token lists, shape stats, training, resume after kill -9."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import RECIPE
from cvasr.data.prepare import prepare_data
from cvasr.data.dump import DumpConfig, dump
from cvasr.text.tokens import make_token_list, read_token_list
from cvasr.training.stages import ConfigError, collect_stats, resolve_config, train

DEMO_CONFIG = RECIPE / "conf" / "train_demo_ctc.yaml"
XLSR_CONFIG = RECIPE / "conf" / "train_xlsr300m_ctc.yaml"
QUICK = ["--batch_size", "8", "--num_workers", "0"]


def test_char_token_list_is_exact(tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.write_text("u1 ক ক ক খ\nu2 খ গ'\n", encoding="utf-8")
    tokens = read_token_list(make_token_list(text, tmp_path / "char"))
    # <blank> first (CTC blank is id 0), then by frequency (ties in order of appearance),
    # <sos/eos> last; the space is a token.
    assert tokens == ["<blank>", "<unk>", "<space>", "ক", "খ", "গ", "'", "<sos/eos>"]


def test_bpe_token_list_has_a_sentencepiece_model(tmp_path: Path, small_release: Path) -> None:
    prepare_data(small_release, tmp_path / "data", show_progress=False)
    tokens = read_token_list(make_token_list(tmp_path / "data" / "train" / "text",
                                             tmp_path / "bpe", token_type="bpe", nbpe=60))
    assert (tmp_path / "bpe" / "bpe.model").is_file()
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    # sentencepiece's 60 pieces hold <unk>, <s> and </s>: espnet2 keeps <unk>, drops the other
    # two and adds <blank> and <sos/eos>.
    assert len(tokens) == 60 - 2 + 1 and len(set(tokens)) == len(tokens)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, small_release: Path) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("train")
    prepare_data(small_release, work / "data", show_progress=False)
    dump(work / "data", work / "dump", DumpConfig(), show_progress=False)
    tokens = make_token_list(work / "dump" / "train" / "text", work / "token_list" / "char")
    return {"work": work, "dump": work / "dump", "tokens": tokens}


@pytest.fixture(scope="module")
def demo_stats(prepared: dict[str, Path], tiny_upstream: Path) -> Path:
    work = prepared["work"]
    config = resolve_config(DEMO_CONFIG, str(tiny_upstream), work / "dl", work / "demo.yaml")
    assert config["frontend_conf"]["frontend_conf"] == {"upstream": "mel"}
    collect_stats(prepared["dump"], prepared["tokens"], work / "demo.yaml", work / "stats")
    return work / "stats"


def epoch_results(log: Path) -> list[dict[str, float]]:
    """The metrics espnet2 logs at the end of every epoch, in order."""
    rows = []
    for line in log.read_text(encoding="utf-8").splitlines():
        if "epoch results:" in line:
            rows.append({k: float(v) for k, v in re.findall(r"\b(\w+)=([0-9.e+-]+)\b", line)
                         if v not in ("nan",)})
    return rows


def test_collect_stats_writes_shapes(demo_stats: Path, prepared: dict[str, Path]) -> None:
    from cvasr.data.kaldi import read_table

    shapes = read_table(demo_stats / "train" / "speech_shape")
    assert shapes == read_table(prepared["dump"] / "train" / "utt2num_samples")
    vocab = len(read_token_list(prepared["tokens"]))
    text_shapes = read_table(demo_stats / "train" / "text_shape.char")
    assert all(v.endswith(f",{vocab}") for v in text_shapes.values())
    assert set(text_shapes) == set(shapes)


@pytest.fixture(scope="module")
def demo_exp(demo_stats: Path, prepared: dict[str, Path]) -> Path:
    exp = prepared["work"] / "exp_demo"
    train(prepared["dump"], prepared["tokens"], demo_stats, prepared["work"] / "demo.yaml", exp,
          extra_args=[*QUICK, "--max_epoch", "6"])
    return exp


@pytest.mark.slow
def test_demo_training_learns_and_logs(demo_exp: Path) -> None:
    exp = demo_exp
    results = epoch_results(exp / "train.log")
    assert len(results) == 6
    losses = [r["loss_ctc"] for r in results]
    assert losses[-1] < 0.8 * losses[0], losses
    assert all("cer_ctc" in r and "wer_ctc" in r for r in results)
    for name in ("config.yaml", "checkpoint.pth", "valid.cer_ctc.best.pth", "images/loss.png",
                 "images/cer_ctc.png", "images/wer_ctc.png"):
        assert (exp / name).exists(), name
    assert list((exp / "tensorboard").rglob("events.out.tfevents.*"))
    state = torch.load(exp / "checkpoint.pth", weights_only=False)
    assert "cvasr_rng_states" in state and not list(exp.glob("*.partial"))


@pytest.mark.slow
def test_resume_after_kill_continues_the_same_run(demo_stats: Path,
                                                  prepared: dict[str, Path]) -> None:
    exp = prepared["work"] / "exp_resume"
    args = ["--dump-dir", str(prepared["dump"]), "--token-list", str(prepared["tokens"]),
            "--config", str(DEMO_CONFIG), "--upstream", "s3prl:mel", "--stats-dir",
            str(demo_stats), "--exp-dir", str(exp), "--", "--num_workers", "0",
            "--batch_size", "2", "--max_epoch", "3"]  # small batches: an epoch lasts seconds
    cmd = [sys.executable, "-m", "cvasr.cli", "train", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    # Kill the whole process group with SIGKILL once epoch 2 is under way.
    while time.monotonic() < deadline:
        log = exp / "train.log"
        if log.is_file() and "2/3epoch started" in log.read_text(encoding="utf-8"):
            time.sleep(0.5)
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("training did not reach epoch 2")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = epoch_results(exp / "train.log")
    assert len(before) == 1
    assert not (exp / "2epoch.pth").exists()

    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = (exp / "train.log").read_text(encoding="utf-8")
    assert "The training was resumed using" in log
    after = epoch_results(exp / "train.log")
    assert len(after) == 3  # epoch 1 from the first run, epochs 2 and 3 from the resumed one
    assert after[0] == before[0]
    state = torch.load(exp / "checkpoint.pth", weights_only=False)
    reporter_epochs = [e for e in state["reporter"]["stats"]]
    assert sorted(reporter_epochs) == [1, 2, 3]

    # A larger max_epoch on re-run extends the same experiment.
    extended = [*cmd[:-2], "--max_epoch", "4"]
    subprocess.run(extended, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert len(epoch_results(exp / "train.log")) == 4


@pytest.mark.slow
def test_xlsr_config_trains_with_frozen_feature_encoder(prepared: dict[str, Path],
                                                        tiny_upstream: Path) -> None:
    work = prepared["work"]
    resolved = work / "xlsr.yaml"
    conf = resolve_config(XLSR_CONFIG, str(tiny_upstream), work / "dl", resolved)
    assert conf["frontend_conf"]["frontend_conf"] == {
        "upstream": "wav2vec2_custom", "path_or_url": str(tiny_upstream.resolve())}
    collect_stats(prepared["dump"], prepared["tokens"], resolved, work / "stats_xlsr")
    exp = work / "exp_xlsr"
    train(prepared["dump"], prepared["tokens"], work / "stats_xlsr", resolved, exp,
          extra_args=[*QUICK, "--max_epoch", "1", "--use_amp", "false", "--accum_grad", "1"])
    results = epoch_results(exp / "train.log")
    assert len(results) == 1 and results[0]["loss_ctc"] > 0
    trained = torch.load(exp / "1epoch.pth", weights_only=False)
    initial = torch.load(tiny_upstream, weights_only=False)["model_weight"]
    prefix = "frontend.upstream.upstream.model."
    conv = "feature_extractor.conv_layers.0.0.weight"
    assert torch.equal(trained[prefix + conv], initial[conv])  # frozen
    layer = "encoder.layers.0.fc1.weight"
    assert not torch.equal(trained[prefix + layer], initial[layer])  # trained


def test_xlsr_speedups_leave_the_demo_loss_curve_unchanged(prepared: dict[str, Path],
                                                          tiny_upstream: Path) -> None:
    """The training-speed changes of bench/NOTES.md change no number that is learned: espnet2's
    own s3prl frontend and training loop, our frontend, ours reading the frozen conv features
    from its cache, and that with the sync-free training loop (the committed config) train to
    the same per-epoch losses and validation CER on the demo corpus (CPU: deterministic)."""
    work = prepared["work"]
    resolved = work / "xlsr_curve.yaml"
    resolve_config(XLSR_CONFIG, str(tiny_upstream), work / "dl", resolved)
    conf = yaml.safe_load(resolved.read_text())
    assert conf["frontend_conf"]["cache_conv_features"] is True and conf["sync_free_step"] is True
    espnet2_loop = dict(conf, sync_free_step=False)
    espnet2_own = dict(espnet2_loop, frontend="s3prl")
    espnet2_own["frontend_conf"] = {k: v for k, v in conf["frontend_conf"].items()
                                    if k != "cache_conv_features"}
    uncached = dict(espnet2_loop,
                    frontend_conf={**conf["frontend_conf"], "cache_conv_features": False})
    collect_stats(prepared["dump"], prepared["tokens"], resolved, work / "stats_curve")
    curves = {}
    for name, variant in (("espnet2", espnet2_own), ("ours", uncached), ("cached", espnet2_loop),
                          ("sync_free", conf)):
        config = work / f"xlsr_{name}.yaml"
        config.write_text(yaml.safe_dump(variant))
        exp = work / f"exp_curve_{name}"
        train(prepared["dump"], prepared["tokens"], work / "stats_curve", config, exp,
              extra_args=[*QUICK, "--max_epoch", "3", "--use_amp", "false"])
        curves[name] = [v for r in epoch_results(exp / "train.log")
                        for v in (r["loss_ctc"], r["cer_ctc"])]
    assert len(curves["espnet2"]) == 2 * 3
    assert curves["ours"] == pytest.approx(curves["espnet2"], rel=1e-4)
    assert curves["cached"] == pytest.approx(curves["ours"], rel=1e-4)
    assert curves["sync_free"] == pytest.approx(curves["cached"], rel=1e-6)


def test_bad_configs_fail_with_one_clear_line(tmp_path: Path, tiny_upstream: Path,
                                              prepared: dict[str, Path]) -> None:
    conf = yaml.safe_load(DEMO_CONFIG.read_text())
    conf["optim_conff"] = {}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(conf))
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'optim_conff' \(did you mean 'optim_conf'\?\)"):
        resolve_config(bad, str(tiny_upstream), tmp_path, tmp_path / "out.yaml")
    with pytest.raises(ConfigError, match="upstream checkpoint /nowhere/x.pt .* does not exist"):
        resolve_config(XLSR_CONFIG, "/nowhere/x.pt", tmp_path, tmp_path / "out.yaml")
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        resolve_config(tmp_path / "missing.yaml", str(tiny_upstream), tmp_path, tmp_path / "o.yaml")

    exp = tmp_path / "exp"
    exp.mkdir()
    torch.save({"model": {"ctc.ctc_lo.weight": torch.zeros(7, 4)}}, exp / "checkpoint.pth")
    vocab = len(read_token_list(prepared["tokens"]))
    with pytest.raises(ConfigError, match=f"has {vocab} tokens but the model in .* was trained with 7"):
        train(prepared["dump"], prepared["tokens"], tmp_path, bad, exp)


@pytest.mark.slow
def test_decode_and_transcribe_with_the_trained_model(demo_exp: Path, prepared: dict[str, Path],
                                                      tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    from cvasr.cli import main
    from cvasr.data.kaldi import read_table
    from cvasr.decoding.decoder import CTCDecoder, decode_data_dir
    from cvasr.decoding.transcriber import Transcriber
    from cvasr.decoding.options import DecodingOptions

    decoder = CTCDecoder(demo_exp)
    assert decoder.model_file.name == "valid.cer_ctc.ave.pth"
    out = decode_data_dir(decoder, prepared["dump"] / "test", tmp_path / "greedy",
                          DecodingOptions(batch_size=4))
    hyps = read_table(out)
    assert set(hyps) == set(read_table(prepared["dump"] / "test" / "text"))
    assert set(read_table(tmp_path / "greedy" / "score")) == set(hyps)
    tokens = read_table(tmp_path / "greedy" / "token")
    token_scores = read_table(tmp_path / "greedy" / "token_score")
    assert set(tokens) == set(token_scores) == set(hyps)
    assert all(len(tokens[u].split()) == len(token_scores[u].split()) for u in hyps)
    # Batching and sorting do not change a hypothesis.
    one_by_one = decode_data_dir(decoder, prepared["dump"] / "test", tmp_path / "b1",
                                 DecodingOptions(batch_size=1))
    assert read_table(one_by_one) == hyps

    # A 44.1 kHz stereo wav of a test clip gives (nearly) the text the dumped clip gives.
    import kaldiio

    utt, (rate, samples) = next(iter(kaldiio.load_scp(str(prepared["dump"] / "test" / "wav.scp")).items()))
    import soxr

    stereo = soxr.resample(samples.astype(np.float32) / 32768, 16000, 44100)
    wav = tmp_path / "clip 44k stereo.wav"
    sf.write(wav, np.stack([stereo, stereo], axis=1), 44100)
    text = Transcriber(demo_exp, beam_size=1, lm=None).transcribe(wav).text
    import editdistance

    # Resampling there and back is not bit-exact: allow a few characters to differ.
    assert editdistance.eval(text, hyps[utt]) <= max(2, len(hyps[utt]) // 5), (text, hyps[utt])
    assert main(["transcribe", "--model", str(demo_exp), str(wav)]) == 0


@pytest.mark.slow
def test_transcribe_decodes_as_stage5_recorded_with_and_without_the_lm(
        demo_exp: Path, prepared: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import kaldiio
    import soundfile as sf

    from cvasr.cli import main
    from cvasr.data.kaldi import read_table
    from cvasr.decoding.decoder import CTCDecoder, Search, data_dir_log_probs
    from cvasr.decoding.options import DecodingOptions, write_record
    from cvasr.lm.ngram import build_lm

    dump = prepared["dump"]
    lm = tmp_path / "lm"
    build_lm(lm, [dump / "train" / "text"], [dump / "dev" / "text", dump / "test" / "text"],
             order=3)
    with_lm = DecodingOptions(beam_size=4, lm=str(lm), lm_weight=1.0, word_bonus=2.0)
    decoder = CTCDecoder(demo_exp)
    logps = data_dir_log_probs(decoder, dump / "test", batch_size=1)
    lm_text = {u: Search(decoder.tokens, with_lm)(x).text for u, x in logps.items()}
    beam_text = {u: Search(decoder.tokens, DecodingOptions(beam_size=4))(x).text
                 for u, x in logps.items()}
    differ = [u for u in logps if lm_text[u] != beam_text[u]]
    assert differ, "the LM changes no test hypothesis: the test below would prove nothing"
    utt = differ[0]
    rate, samples = dict(kaldiio.load_scp(str(dump / "test" / "wav.scp")))[utt]
    wav = tmp_path / "clip.wav"
    sf.write(wav, samples, rate, subtype="PCM_16")  # the dumped samples exactly

    write_record(demo_exp, with_lm)
    try:
        assert main(["transcribe", "--model", str(demo_exp), "--nj", "1", str(wav)]) == 0
        assert capsys.readouterr().out == f"{wav}\t{lm_text[utt]}\n"
        assert main(["transcribe", "--model", str(demo_exp), "--no-lm", "--nj", "1",
                     str(wav)]) == 0
        assert capsys.readouterr().out == f"{wav}\t{beam_text[utt]}\n"
    finally:
        (demo_exp / "decoding.yaml").unlink()
    assert read_table(dump / "test" / "text")[utt]  # a real utterance with a reference
