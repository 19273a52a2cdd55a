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
    for name in ("acc", "cer", "wer", "loss_att"):  # the attention decoder's: NaN, no plot
        assert not (exp / "images" / f"{name}.png").exists(), name
    assert list((exp / "tensorboard").rglob("events.out.tfevents.*"))
    state = torch.load(exp / "checkpoint.pth", weights_only=False)
    assert "cvasr_rng_states" in state and not list(exp.glob("*.partial"))
    log = (exp / "train.log").read_text(encoding="utf-8")
    # espnet2's autocast deprecation, which torch's warning-catching blocks repeated, dropped
    assert "torch.cuda.amp.autocast(args...)` is deprecated" not in log
    # what happens after the last epoch, timed
    for step in ("after the last epoch: epoch models on disk in", "training curves drawn in",
                 "checkpoint writes done and the writer stopped in"):
        assert step in log, step


def phase_values(log: Path) -> list[dict[str, dict[str, float]]]:
    """Per epoch, the loss and error values of [train] and [valid] (times left out: they differ
    from run to run)."""
    rows = []
    for line in log.read_text(encoding="utf-8").splitlines():
        m = re.search(r"(\d+)epoch results: \[train\] (.*)\[valid\] (.*)", line)
        if m:
            rows.append({phase: {k: float(v) for k, v in re.findall(r"\b(\w+)=([0-9.e+-]+)\b", text)
                                 if k.startswith(("loss", "cer", "wer"))}
                         for phase, text in (("train", m.group(2)), ("valid", m.group(3)))})
    return rows


def _train_cmd(prepared: dict[str, Path], demo_stats: Path, exp: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cvasr.cli", "train", "--dump-dir", str(prepared["dump"]),
            "--token-list", str(prepared["tokens"]), "--config", str(DEMO_CONFIG), "--upstream",
            "s3prl:mel", "--stats-dir", str(demo_stats), "--exp-dir", str(exp), "--",
            "--num_workers", "0", "--batch_size", "2", "--keep_nbest_models", "2", *extra]


EVERY_2 = ["--checkpoint_every_minutes", "0", "--checkpoint_every_epochs", "2", "--max_epoch", "4"]


@pytest.fixture(scope="module")
def uninterrupted(demo_stats: Path, prepared: dict[str, Path]) -> Path:
    """4 epochs, a checkpoint every 2, validated every epoch (espnet2's way)."""
    exp = prepared["work"] / "exp_uninterrupted"
    subprocess.run(_train_cmd(prepared, demo_stats, exp, *EVERY_2), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return exp


@pytest.mark.slow
def test_resume_after_kill_from_an_older_checkpoint_is_exact(demo_stats: Path,
                                                             prepared: dict[str, Path],
                                                             uninterrupted: Path) -> None:
    """Checkpoints every 2 epochs; killed in epoch 4, the run resumes from epoch 2's checkpoint,
    trains epochs 3 and 4 again, and ends exactly where an uninterrupted run ends."""
    reference = uninterrupted

    exp = prepared["work"] / "exp_resume"
    cmd = _train_cmd(prepared, demo_stats, exp, *EVERY_2)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    # Kill the whole process group with SIGKILL once epoch 4 is under way.
    while time.monotonic() < deadline:
        log = exp / "train.log"
        if log.is_file() and "4/4epoch started" in log.read_text(encoding="utf-8"):
            time.sleep(0.5)
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("training did not reach epoch 4")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(phase_values(exp / "train.log")) == 3
    state = torch.load(exp / "checkpoint.pth", weights_only=False)
    assert state["reporter"]["epoch"] == 2  # epoch 3 ended without a checkpoint
    assert not (exp / "images").exists()  # curves are drawn at the end, not every epoch

    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = (exp / "train.log").read_text(encoding="utf-8")
    assert "The training was resumed using" in log
    values = phase_values(exp / "train.log")
    assert len(values) == 5  # 1, 2, 3 of the killed run, 3 and 4 again
    assert values[:3] + values[4:] == phase_values(reference / "train.log") == \
        values[:2] + values[3:]
    # the same n best epoch files and the same average as the uninterrupted run
    files = sorted(p.name for p in exp.glob("*epoch.pth"))
    assert files == sorted(p.name for p in reference.glob("*epoch.pth"))
    assert 2 <= len(files) <= 3  # the 2 best, and the last if it is not among them
    averaged = torch.load(exp / "valid.cer_ctc.ave.pth", weights_only=False)
    expected = torch.load(reference / "valid.cer_ctc.ave.pth", weights_only=False)
    assert averaged.keys() == expected.keys()
    assert all(torch.equal(averaged[k], expected[k]) for k in averaged)
    assert (exp / "images" / "loss.png").is_file() and not list(exp.glob("*.partial"))

    # A larger max_epoch on re-run extends the same experiment.
    subprocess.run([*cmd[:-2], "--max_epoch", "5"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    assert len(phase_values(exp / "train.log")) == 6


@pytest.mark.slow
def test_validation_every_3_epochs_trains_the_same_and_ranks_the_validated(
        demo_stats: Path, prepared: dict[str, Path], uninterrupted: Path) -> None:
    """Epochs 3 and 4 (every 3rd and the last) validated: training is the same number for
    number (each epoch is seeded on its own), their validation too, and the n best, the best
    link and the average come from them alone. The run also traces stalls between epochs
    (`--trace_stalls_after`, a threshold every epoch's end passes here): stacks of its threads
    are written, and the numbers do not change."""
    exp = prepared["work"] / "exp_valid_every_3"
    subprocess.run(_train_cmd(prepared, demo_stats, exp, *EVERY_2, "--valid_every_epochs", "3",
                              "--trace_stalls_after", "0.001"),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    traces = (exp / "stall_traces.txt").read_text()
    for epoch in (1, 2, 3):  # espnet2's work between two epochs takes more than a millisecond
        assert f"epoch {epoch} ended at " in traces and f"--- epoch {epoch} ended " in traces
    assert "Thread MainThread" in traces and "espnet2/train/trainer.py" in traces
    assert "the training goes on after its last epoch" in traces  # epoch 4 of 4
    assert "the training ended at " in traces  # then stacks until the process exits, if slow
    got, want = phase_values(exp / "train.log"), phase_values(uninterrupted / "train.log")
    assert [e["train"] for e in got] == [e["train"] for e in want]
    assert [e["valid"] for e in got] == [{}, {}, want[2]["valid"], want[3]["valid"]]
    assert sorted(p.name for p in exp.glob("*epoch.pth")) == ["3epoch.pth", "4epoch.pth"]
    best = 3 if want[2]["valid"]["cer_ctc"] <= want[3]["valid"]["cer_ctc"] else 4
    assert os.readlink(exp / "valid.cer_ctc.best.pth") == f"{best}epoch.pth"
    models = [torch.load(exp / f"{e}epoch.pth", weights_only=False) for e in (3, 4)]
    averaged = torch.load(exp / "valid.cer_ctc.ave.pth", weights_only=False)
    for key, value in averaged.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (models[0][key] + models[1][key]) / 2)


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
    # the schedule computed from the data is what espnet2 ran with and recorded: 24 clips,
    # 8 a batch, 1 epoch = 3 steps, inside the 500 warm-up steps
    recorded = yaml.safe_load((exp / "config.yaml").read_text())["scheduler_conf"]
    assert recorded["warmup_steps_list"] == [0, 3]
    assert recorded["warmup_lr_list"] == pytest.approx([0.0, 3.0e-4 * 3 / 500])

    # one more epoch: the schedule computed from the data follows the new end (6 steps)
    resolve_config(XLSR_CONFIG, str(tiny_upstream), work / "dl", resolved)
    train(prepared["dump"], prepared["tokens"], work / "stats_xlsr", resolved, exp,
          extra_args=[*QUICK, "--max_epoch", "2", "--use_amp", "false", "--accum_grad", "1"])
    recorded = yaml.safe_load((exp / "config.yaml").read_text())["scheduler_conf"]
    assert recorded["warmup_steps_list"] == [0, 6]
    assert len(epoch_results(exp / "train.log")) == 2


def test_a_resumed_schedule_is_the_configs(tmp_path: Path) -> None:
    """The checkpoint's schedule would win on resume (torch schedulers save their steps and
    rates); a schedule recomputed for a longer run must take effect from the next step on."""
    from espnet2.schedulers.piecewise_linear_warmup_lr import PiecewiseLinearWarmupLR
    from espnet2.train.reporter import Reporter

    from cvasr.training.task import SafeCheckpointTrainer

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3.0e-4)
    old = PiecewiseLinearWarmupLR(optimizer, [0, 3], [0.0, 1.8e-6])
    for _ in range(3):
        optimizer.step()
        old.step()
    # past its end the old schedule extrapolates with espnet2's inverse square root
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3.0e-4 * (3 / 4) ** 0.5)
    torch.save({"model": model.state_dict(), "reporter": Reporter().state_dict(),
                "optimizers": [optimizer.state_dict()], "schedulers": [old.state_dict()],
                "scaler": None}, tmp_path / "checkpoint.pth")

    optimizer = torch.optim.Adam(model.parameters(), lr=3.0e-4)
    new = PiecewiseLinearWarmupLR(optimizer, [0, 6], [0.0, 3.6e-6])
    SafeCheckpointTrainer.resume(tmp_path / "checkpoint.pth", model, Reporter(), [optimizer],
                                 [new], None)
    assert new.warmup_steps_list == [0, 6] and new.last_epoch == 3
    used = []
    for _ in range(3):  # steps 4, 5, 6 of the new schedule
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        new.step()
    assert used == pytest.approx([2.4e-6, 3.0e-6, 3.6e-6])


def test_xlsr_speedups_leave_the_demo_loss_curve_unchanged(prepared: dict[str, Path],
                                                          tiny_upstream: Path) -> None:
    """The training-speed changes of bench/NOTES.md change no number that is learned: espnet2's
    own s3prl frontend and training loop, our frontend, ours reading the frozen conv features
    from its cache, and that with the sync-free training loop (the committed config, with
    espnet2's SpecAugment: the committed sync-free one draws other masks from the same
    distribution, tests/test_sync_free_specaug.py) train to the same per-epoch losses and
    validation CER on the demo corpus (CPU: deterministic)."""
    work = prepared["work"]
    resolved = work / "xlsr_curve.yaml"
    resolve_config(XLSR_CONFIG, str(tiny_upstream), work / "dl", resolved)
    conf = yaml.safe_load(resolved.read_text())
    assert conf["frontend_conf"]["cache_conv_features"] is True and conf["sync_free_step"] is True
    assert conf["specaug"] == "sync_free_specaug"
    conf["specaug"] = "specaug"
    # espnet2's frontend takes no upstream_dropouts: every variant keeps the checkpoint's
    # dropouts (0.1), so the dropout masks must agree too (tests/test_frontend.py tests the option)
    assert conf["frontend_conf"].pop("upstream_dropouts")["dropout"] == 0.0
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
              extra_args=[*QUICK, "--max_epoch", "3", "--use_amp", "false",
                          "--valid_every_epochs", "1"])  # a CER every epoch to compare
        curves[name] = [v for r in epoch_results(exp / "train.log")
                        for v in (r["loss_ctc"], r["cer_ctc"])]
    assert len(curves["espnet2"]) == 2 * 3
    assert curves["ours"] == pytest.approx(curves["espnet2"], rel=1e-4)
    assert curves["cached"] == pytest.approx(curves["ours"], rel=1e-4)
    assert curves["sync_free"] == pytest.approx(curves["cached"], rel=1e-6)


def test_persistent_workers_train_as_espnet2s_and_stop_with_the_training(
        prepared: dict[str, Path], tiny_upstream: Path) -> None:
    """The committed config's persistent DataLoader workers give the losses and CERs of
    espnet2's workers started every epoch, and stage 4 stops them (training's and
    validation's) as the training ends: on a GPU the process's exit would wait 5 s for each
    (cvasr.speedups.persistent_loader)."""
    work = prepared["work"]
    resolved = work / "xlsr_workers.yaml"
    resolve_config(XLSR_CONFIG, str(tiny_upstream), work / "dl", resolved)
    assert yaml.safe_load(resolved.read_text())["persistent_workers"] is True
    collect_stats(prepared["dump"], prepared["tokens"], resolved, work / "stats_workers")
    logs = {}
    for persistent in ("true", "false"):
        exp = work / f"exp_workers_{persistent}"
        train(prepared["dump"], prepared["tokens"], work / "stats_workers", resolved, exp,
              extra_args=["--batch_size", "8", "--num_workers", "1", "--max_epoch", "2",
                          "--use_amp", "false", "--valid_every_epochs", "1",
                          "--persistent_workers", persistent])
        logs[persistent] = exp / "train.log"
    curves = {k: [v for r in epoch_results(log) for v in (r["loss_ctc"], r["cer_ctc"])]
              for k, log in logs.items()}
    assert len(curves["true"]) == 2 * 2 and curves["true"] == curves["false"]
    assert logs["true"].read_text().count("stopped 1 persistent DataLoader worker(s)") == 2
    assert "persistent DataLoader worker" not in logs["false"].read_text()


def test_xlsr_config_under_ddp_keeps_the_lengths_on_the_host(prepared: dict[str, Path],
                                                             tiny_upstream: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """The committed XLS-R config (sync-free step, a model that takes host lengths) on 2 CPU
    processes under torchrun: the lengths reach the model through DDP's forward on the host
    (on GPUs, DDP would copy them to the device and each read would be a host sync), and it
    trains."""
    from cvasr.training.launch import Launch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    work = prepared["work"]
    resolved = work / "xlsr_ddp.yaml"
    resolve_config(XLSR_CONFIG, str(tiny_upstream), work / "dl", resolved)
    collect_stats(prepared["dump"], prepared["tokens"], resolved, work / "stats_ddp")
    exp = work / "exp_xlsr_ddp"
    train(prepared["dump"], prepared["tokens"], work / "stats_ddp", resolved, exp,
          extra_args=[*QUICK, "--max_epoch", "1", "--use_amp", "false"],
          launch=Launch("torchrun", cpu_processes=2))
    log = (exp / "train.log").read_text(encoding="utf-8")
    # (espnet2 logs INFO from rank 0 alone)
    assert re.search(r"\[[^\]]*:0/2\].*lengths pass DDP's forward on the host", log)
    assert len(epoch_results(exp / "train.log")) == 1


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

    # values of the wrong type are named at stage 3, not found by torch in stage 4
    def problem(change) -> str:
        conf = yaml.safe_load(DEMO_CONFIG.read_text())
        change(conf)
        bad.write_text(yaml.safe_dump(conf))
        with pytest.raises(ConfigError) as err:
            resolve_config(bad, str(tiny_upstream), tmp_path, tmp_path / "out.yaml")
        return str(err.value)

    assert problem(lambda c: c["optim_conf"].update(lr="fast")) == (
        f"{bad}: optim_conf.lr must be float | torch.Tensor (as AdamW declares), got str 'fast'")
    assert "got str '3e-4' (YAML reads 3e-4 as text: write it with a dot, e.g. 3.0e-4)" in \
        problem(lambda c: c["optim_conf"].update(lr="3e-4"))
    assert problem(lambda c: c.update(max_epoch="ten")) == \
        f"{bad}: max_epoch must be a whole number, got str 'ten'"
    assert problem(lambda c: c.update(batch_type="sortd")).startswith(
        f"{bad}: batch_type must be one of unsorted, sorted, folded,")
    assert problem(lambda c: c["encoder_conf"].update(num_block=2)) == (
        f"{bad}: unknown key 'encoder_conf.num_block': TransformerEncoder has no option "
        "'num_block' (did you mean 'num_blocks'?)")
    assert problem(lambda c: c["scheduler_conf"].update(warmup_steps=[35])) == (
        f"{bad}: scheduler_conf.warmup_steps must be Union[int, float] (as WarmupLR declares), "
        "got list [35]")
    # YAML lists where a class declares a tuple are fine: Adam's betas
    conf = yaml.safe_load(XLSR_CONFIG.read_text())
    assert conf["optim_conf"]["betas"] == [0.9, 0.999]
    resolve_config(XLSR_CONFIG, str(tiny_upstream), tmp_path, tmp_path / "out.yaml")

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
    threads = torch.get_num_threads()  # --nj sets this process's; later tests compare numbers
    try:                               # with fresh interpreters (test_interop)
        assert main(["transcribe", "--model", str(demo_exp), "--nj", "1", str(wav)]) == 0
        assert capsys.readouterr().out == f"{wav}\t{lm_text[utt]}\n"
        assert main(["transcribe", "--model", str(demo_exp), "--no-lm", "--nj", "1",
                     str(wav)]) == 0
        assert capsys.readouterr().out == f"{wav}\t{beam_text[utt]}\n"
    finally:
        (demo_exp / "decoding.yaml").unlink()
        torch.set_num_threads(threads)
    assert read_table(dump / "test" / "text")[utt]  # a real utterance with a reference


@pytest.mark.parametrize("extra, steps, lrs", [
    # 24 clips, 8 a batch: 3 batches an epoch
    (["--max_epoch", "400", "--batch_size", "8"], [0, 500, 1200], [0.0, 3.0e-4, 0.0]),
    # 1 optimizer step an epoch: 400 steps end inside the 500 warm-up steps, at 400/500 of the peak
    (["--max_epoch", "400", "--batch_size", "8", "--accum_grad", "2"], [0, 400],
     [0.0, 3.0e-4 * 400 / 500]),
    (["--max_epoch", "10", "--batch_size", "5"], [0, 40], [0.0, 3.0e-4 * 40 / 500]),
    (["--max_epoch", "400", "--num_iters_per_epoch", "7"], [0, 500, 2800], [0.0, 3.0e-4, 0.0]),
])
def test_schedule_from_the_data(tmp_path: Path, tiny_upstream: Path, extra: list[str],
                                steps: list[int], lrs: list[float]) -> None:
    from cvasr.training.stages import schedule_from_data

    stats = tmp_path / "stats"
    stats.mkdir()
    (stats / "speech_shape").write_text("".join(f"u{i:02d} {16000 + 100 * i}\n" for i in range(24)))
    (stats / "text_shape.char").write_text("".join(f"u{i:02d} {10 + i},40\n" for i in range(24)))
    config = tmp_path / "xlsr.yaml"
    resolve_config(XLSR_CONFIG, str(tiny_upstream), tmp_path, config)
    line = schedule_from_data(config, [stats / "speech_shape", stats / "text_shape.char"], extra)
    conf = yaml.safe_load(config.read_text())["scheduler_conf"]
    assert conf["warmup_steps_list"] == steps and f"= {steps[-1]} steps" in line
    assert conf["warmup_lr_list"] == pytest.approx(lrs)
    # a config without `auto` is left as it is
    assert schedule_from_data(config, [stats / "speech_shape", stats / "text_shape.char"]) is None


@pytest.mark.slow
def test_resume_refuses_what_it_cannot_honour(demo_stats: Path, prepared: dict[str, Path],
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from cvasr.training.resume import ResumeRefused

    work, dump, tokens = prepared["work"], prepared["dump"], prepared["tokens"]
    config = work / "demo.yaml"
    exp = work / "exp_honest"
    train(dump, tokens, demo_stats, config, exp, extra_args=[*QUICK, "--max_epoch", "2"])
    assert len(epoch_results(exp / "train.log")) == 2
    recorded, log = (exp / "config.yaml").read_text(), (exp / "train.log").read_text()

    def changed(edit) -> Path:
        conf = yaml.safe_load(config.read_text())
        edit(conf)
        path = tmp_path / f"changed{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump(conf))
        return path

    # a lower learning rate: espnet2 would resume with the old one (the optimizer's and the
    # scheduler's saved state) while config.yaml claimed the new
    with pytest.raises(ResumeRefused) as refused:
        train(dump, tokens, demo_stats, changed(lambda c: c["optim_conf"].update(lr=1.0e-3)),
              exp, extra_args=[*QUICK, "--max_epoch", "3"])
    assert str(refused.value) == (
        f"{exp} has 2 epochs trained with another config, and resuming cannot honour the "
        "change (the optimizer): optim_conf.lr 0.002 -> 0.001. Train a new experiment (run.sh "
        "--asr_tag NAME, or another --exp-dir), or start this one over (run.sh --train_args "
        "\"--resume false\", or -- --resume false)")
    # the schedule and the model, named together; and other tokens in a list of the same size
    with pytest.raises(ResumeRefused, match=r"\(the model, the schedule\): encoder_conf.num_blocks "
                                            r"4 -> 2; scheduler_conf.warmup_steps 35 -> 70\."):
        train(dump, tokens, demo_stats, changed(lambda c: (c["encoder_conf"].update(num_blocks=2),
                                                           c["scheduler_conf"].update(
                                                               warmup_steps=70))),
              exp, extra_args=QUICK)
    swapped = read_token_list(tokens)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    (tmp_path / "tokens.txt").write_text("\n".join(swapped) + "\n", encoding="utf-8")
    with pytest.raises(ResumeRefused, match=r"\(the tokens\): token_list \(other tokens\)"):
        train(dump, tmp_path / "tokens.txt", demo_stats, config, exp, extra_args=QUICK)
    # nothing ran: the experiment is as it was
    assert (exp / "config.yaml").read_text() == recorded
    assert (exp / "train.log").read_text() == log

    # max_epoch below the epochs trained: said, and nothing to train
    capsys.readouterr()
    train(dump, tokens, demo_stats, config, exp, extra_args=[*QUICK, "--max_epoch", "1"])
    assert capsys.readouterr().out == (
        f"{exp} has 2 epochs trained, more than max_epoch 1: nothing to train; the model stays "
        "the 2-epoch one (for a 1-epoch model: a new --asr_tag, or --train_args \"--resume "
        "false\")\n")
    assert (exp / "train.log").read_text() == log

    # what resuming honours (how many checkpoints are kept, the workers) with max_epoch up
    train(dump, tokens, demo_stats, changed(lambda c: c.update(keep_nbest_models=2)), exp,
          extra_args=[*QUICK, "--max_epoch", "3"])
    assert f"resuming {exp} at epoch 3 of 3" in capsys.readouterr().out
    assert len(epoch_results(exp / "train.log")) == 3
    assert yaml.safe_load((exp / "config.yaml").read_text())["keep_nbest_models"] == 2


def test_plots_only_the_curves_with_data(tmp_path: Path) -> None:
    """A CTC-only model reports the attention decoder's statistics as None, which espnet2's
    reporter keeps as NaN: no image for them, and an old empty one is removed."""
    from espnet2.train.reporter import Reporter

    from cvasr.training.plots import plot_curves

    reporter = Reporter()
    for epoch, loss in ((1, 90.0), (2, 48.0)):
        reporter.set_epoch(epoch)
        with reporter.observe("train") as sub:
            sub.register({"loss_ctc": torch.tensor(loss), "acc": None})
            sub.next()
        with reporter.observe("valid") as sub:
            sub.register({"loss_ctc": torch.tensor(loss - 10), "cer_ctc": 0.5, "acc": None},
                         weight=4)
            sub.next()
    (tmp_path / "acc.png").write_bytes(b"an empty plot from an earlier run")
    written = plot_curves(reporter, tmp_path)
    assert [p.name for p in written] == ["cer_ctc.png", "loss_ctc.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cer_ctc.png", "loss_ctc.png"]
    assert (tmp_path / "loss_ctc.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_torchrun_one_machine_and_two_local_nodes_train_the_same(
        demo_stats: Path, prepared: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """DDP started by torchrun, 2 processes on one node and 1 process on each of 2 "nodes" of
    this machine (the multi-node path: node ranks, a TCP rendezvous), CPU and gloo: both runs
    are 2-rank DDP with the same batches, so they end with the same parameters; every rank
    trained (espnet2 logs `[host:0/2]`), node 1's output is in its own log. The 2-node run
    also profiles a step of epoch 2 in each process, which changes no number. Both take the
    XLS-R config's `gradient_as_bucket_view: true` (gradients that are views of DDP's buckets)."""
    from cvasr.training.launch import Launch

    # torchrun sets 1 thread a process only when a node has several: the same for both here
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    finals = {}
    for name, launch in (("one_node", Launch("torchrun", cpu_processes=2)),
                         ("two_nodes", Launch("torchrun", nnodes=2, local_nodes=True,
                                              cpu_processes=1))):
        exp = prepared["work"] / f"exp_torchrun_{name}"
        profile = ["--profile_epoch", "2", "--profile_steps", "1"] if name == "two_nodes" else []
        train(prepared["dump"], prepared["tokens"], demo_stats, prepared["work"] / "demo.yaml",
              exp, extra_args=[*QUICK, "--max_epoch", "2", "--gradient_as_bucket_view", "true",
                               *profile], launch=launch)
        log = (exp / "train.log").read_text(encoding="utf-8")
        assert re.search(r"\[[^\]]*:0/2\].*2epoch results", log), name
        assert len(epoch_results(exp / "train.log")) == 2
        if name == "two_nodes":
            node1 = (exp / "train.node1.log").read_text(encoding="utf-8")
            assert "--node-rank 1" in node1.splitlines()[0]
            for rank in (0, 1):
                text = (exp / "profile" / f"epoch2_rank{rank}.txt").read_text()
                assert "aten::" in text and "Host syncs by Python stack" in text
        else:
            assert not (exp / "profile").exists()
        finals[name] = torch.load(exp / "2epoch.pth", map_location="cpu")
    assert finals["one_node"].keys() == finals["two_nodes"].keys()
    for key, value in finals["one_node"].items():
        assert torch.equal(value, finals["two_nodes"][key]), key


def test_xlsr_config_leaves_no_trainable_parameter_without_a_gradient(tmp_path: Path,
                                                                      tiny_upstream: Path
                                                                      ) -> None:
    """The XLS-R config runs DDP with `unused_parameters: false` (no search of the autograd
    graph for unused parameters every step, which DDP would otherwise need): one training step
    gives every parameter it leaves trainable a gradient; the frozen ones are the conv feature
    encoder, wav2vec 2.0's pre-training heads and s3prl's layer weights (one layer is used)."""
    from cvasr.training.task import CvasrASRTask

    resolved = tmp_path / "xlsr.yaml"
    conf = resolve_config(XLSR_CONFIG, str(tiny_upstream), tmp_path / "dl", resolved)
    assert conf["unused_parameters"] is False
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>", "<space>", *"abcdefgh", "<sos/eos>"]) + "\n")
    args = CvasrASRTask.get_parser().parse_args(
        ["--config", str(resolved), "--token_list", str(tokens), "--token_type", "char",
         "--output_dir", str(tmp_path / "exp")])
    torch.manual_seed(0)
    model = CvasrASRTask.build_model(args)
    for name, p in model.named_parameters():  # as espnet2's main_worker applies freeze_param
        if any(name == t or name.startswith(t + ".") for t in args.freeze_param):
            p.requires_grad = False
    model.train()
    speech = torch.randn(2, 16000)
    loss, _, _ = model(speech=speech, speech_lengths=torch.tensor([16000, 12000]),
                       text=torch.tensor([[3, 4, 5], [6, 7, 0]]),
                       text_lengths=torch.tensor([3, 2]))
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    frozen = {n.split("model.")[-1].split(".")[0] for n, p in model.named_parameters()
              if not p.requires_grad}
    assert frozen == {"feature_extractor", "quantizer", "project_q", "final_proj", "mask_emb",
                      "frontend"}  # the last: frontend.featurizer.weights, unused with one layer


@pytest.mark.parametrize("epochs, extra, cached, compiled", [
    (10, [], False, False),        # 10 x the batches: fewer steps than pay for compiling
    (10, [], True, True),          # a warm compile cache: compiled however short the run
    (None, [], False, True),       # enough epochs to pass COMPILE_PAYS_AFTER_STEPS
    (10, ["--compile_upstream", "true"], False, None),  # set by the options: not settled here
    (10, ["--compile_mode", "default"], False, False),  # eager, and no mode goes unused
])
def test_compile_auto_from_the_planned_steps_and_the_cache(
        tmp_path: Path, tiny_upstream: Path, prepared: dict[str, Path], demo_stats: Path,
        epochs: int | None, extra: list[str], cached: bool, compiled: bool | None) -> None:
    from cvasr.defaults import COMPILE_PAYS_AFTER_STEPS
    from cvasr.training.stages import compile_from_data, optimizer_steps

    resolved = tmp_path / "xlsr.yaml"
    conf = resolve_config(XLSR_CONFIG, str(tiny_upstream), tmp_path / "dl", resolved)
    assert conf["compile_upstream"] == "auto"
    shapes = [demo_stats / "train" / "speech_shape", demo_stats / "train" / "text_shape.char"]
    batches = optimizer_steps(resolved, shapes)[2]
    epochs = epochs or -(-COMPILE_PAYS_AFTER_STEPS // batches)  # the fewest that pay
    exp = tmp_path / "exp"
    if cached:
        (exp / "compile_cache" / "fxgraph" / "ab").mkdir(parents=True)
        (exp / "compile_cache" / "fxgraph" / "ab" / "graph").write_bytes(b"x")
    planned = ["--max_epoch", str(epochs), *extra]
    if compiled is not None:  # without a GPU, eager whatever the run's length or the cache
        assert compile_from_data(resolved, shapes, exp, planned, ngpu=0) == (
            ["--compile_upstream", "false"],
            "compile_upstream auto: no GPU (--ngpu 0); the transformer runs eager")
    args, line = compile_from_data(resolved, shapes, exp, planned, ngpu=1)
    if compiled is None:
        assert (args, line) == ([], None)
        return
    assert args == ["--compile_upstream", str(compiled).lower()]
    if compiled and cached:
        assert line.endswith("is compiled")
    elif compiled:  # the minutes of the first epoch announced, and where they are kept
        assert line.endswith(f"is compiled (its first epoch compiles it: about 3-4 minutes on "
                             f"an H200, cached in {exp / 'compile_cache'} for the next run)")
    elif extra:
        assert line.endswith("runs eager")
    else:  # the config's CUDA graphs go unused when eager: the line says so
        assert line.endswith("runs eager (compile_mode reduce-overhead goes unused; "
                             "--compile_upstream true compiles it whatever the run's length)")
    if not cached:
        assert f"{batches} batches an epoch x {epochs} epochs = {batches * epochs}" in line
    # espnet2 parses what stage 4 passes, and the config's own auto
    from cvasr.training.task import CvasrASRTask

    parsed = CvasrASRTask.get_parser().parse_args(["--config", str(resolved), *args])
    assert parsed.compile_upstream is compiled
    assert CvasrASRTask.get_parser().parse_args(["--config", str(resolved)]).compile_upstream \
        == "auto"


def test_compile_cache_is_the_experiments_unless_the_user_chose_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing espnet2's task sets TORCHINDUCTOR_CACHE_DIR to inductor's default in stage 4's
    own process; that is not the user's choice, so the training processes still keep their
    compiled graphs in the experiment (where a resumed run finds them). A path the user set is
    followed."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from cvasr.training.stages import compile_cache_env

    mine = {"TORCHINDUCTOR_CACHE_DIR": str((tmp_path / "compile_cache").resolve())}
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert compile_cache_env(tmp_path) == mine
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    assert compile_cache_env(tmp_path) == mine
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "users"))
    assert compile_cache_env(tmp_path) == {}


def test_resume_takes_new_diagnostics_and_speed_options_but_not_a_new_lr() -> None:
    from cvasr.training.resume import config_changes

    old = {"trace_stalls_after": 0.0, "prefetch_next_epoch": True, "clip_in_optimizer": False,
           "compile_options": {}, "optim_conf": {"lr": 0.002}}
    new = {"trace_stalls_after": 1.0, "prefetch_next_epoch": False, "clip_in_optimizer": True,
           "compile_options": {"triton": {"mix_order_reduction_split_size": 64}},
           "optim_conf": {"lr": 0.002}}
    assert config_changes(old, new) == []  # a stall trace or a speed-up added on resume
    new["optim_conf"] = {"lr": 0.001}
    assert [c.key for c in config_changes(old, new)] == ["optim_conf.lr"]
