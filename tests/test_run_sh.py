"""egs/as_cv7/run.sh: option parsing, stage selection, completion records and skipping."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import RECIPE

RUN_SH = RECIPE / "run.sh"


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(RUN_SH), *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"run.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cv_args(small_release: Path, tiny_upstream: Path, tmp_path: Path) -> list[str]:
    return ["--cv_root", str(small_release), "--upstream_ckpt", str(tiny_upstream),
            "--work_dir", str(tmp_path / "work")]


def test_help_lists_the_stages() -> None:
    proc = run("--help")
    assert "--stop-stage M" in proc.stdout and "4 training (espnet2)" in proc.stdout


@pytest.mark.parametrize("bad, message", [
    (["--no-such-option", "1"], "unknown option --no_such_option"),
    (["--PATH", "/tmp"], "unknown option --PATH"),
    (["--stage"], "option --stage needs a value"),
    (["stray"], "unexpected argument 'stray'"),
    (["--stage", "7"], "--stage must be 0..5, got '7'"),
    (["--stage", "3", "--stop-stage", "1"], "--stage (3) is after --stop-stage (1)"),
    (["--demo", "yes"], "--demo must be true or false, got 'yes'"),
    (["--train_set", "all"], "--train_set must be train or validated, got 'all'"),
    (["--max_drop", "1.5"], "--max_drop must be a number in [0, 1], got '1.5'"),
    (["--nj", "0"], "--nj must be at least 1, got '0'"),
    (["--demo", "true", "--cv_root", "/x"], "--demo true makes its own corpus"),
    (["--cv_root", "/x", "--cv_tarball", "/y.tgz"], "either --cv_root or --cv_tarball"),
])
def test_bad_options_are_rejected_with_a_clear_message(bad: list[str], message: str) -> None:
    proc = run(*bad, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_stage0_records_and_skips(cv_args: list[str], small_release: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    first = run(*cv_args, "--stage", "0", "--stop-stage", "0")
    assert "stage 0 (corpus_and_upstream): done" in first.stdout
    assert "next: stage 1 (data_prep)" in first.stdout
    assert (work / "data" / "local" / "release_dir").read_text().strip() == str(small_release)
    assert (work / "exp" / "stage_records" / "stage0.done").is_file()
    stage_log = (work / "exp" / "logs" / "stage0_corpus_and_upstream.log").read_text()
    assert "train.tsv" in stage_log and "2 layers x 128" in stage_log

    # Both spellings of the option; the finished stage is skipped.
    second = run(*cv_args, "--stage=0", "--stop_stage", "0")
    assert "stage 0 (corpus_and_upstream): already done with these inputs, skipping" in second.stdout
    assert "train.tsv" not in second.stdout

    # Changed inputs run the stage again.
    third = run(*cv_args, "--stage", "0", "--stop-stage", "0", "--lang", "as", "--upstream_ckpt",
                str(work.parent / "missing.pt"), check=False)
    assert "inputs changed since it last ran" in third.stdout
    assert third.returncode == 1
    assert "missing.pt does not exist" in third.stdout  # said to the console
    assert "stage 0 (corpus_and_upstream): FAILED" in third.stdout
    assert not (work / "exp" / "stage_records" / "stage0.done").exists()


def test_decoding_without_a_trained_model_fails_clearly(cv_args: list[str]) -> None:
    proc = run(*cv_args, "--stage", "5", "--stop-stage", "5", check=False)
    assert proc.returncode == 1
    assert "no trained model in" in proc.stdout and "run stage 4 first" in proc.stdout
    assert "stage 5 (decode_and_score): FAILED" in proc.stdout


def test_missing_release_files_fail_stage0_with_the_download_hint(tmp_path: Path,
                                                                   tiny_upstream: Path) -> None:
    empty = tmp_path / "empty_release"
    empty.mkdir()
    proc = run("--cv_root", empty, "--upstream_ckpt", tiny_upstream, "--work_dir", tmp_path / "w",
               "--stop-stage", "0", check=False)
    assert proc.returncode == 1
    assert "missing clips/, train.tsv, dev.tsv, test.tsv, validated.tsv" in proc.stdout
    assert "commonvoice.mozilla.org" in proc.stdout
    nothing = run("--work_dir", tmp_path / "w2", "--stop-stage", "0", check=False)
    assert "stage 0 needs a corpus: --cv_root DIR, --cv_tarball FILE or --demo true" in nothing.stdout


@pytest.mark.slow
def test_demo_stages_0_to_2_and_resume(tmp_path: Path) -> None:
    from cvasr.data.datadir import validate_data_dir

    work = tmp_path / "demo"
    proc = run("--demo", "true", "--demo_size", "small", "--work_dir", work, "--stop-stage", "2")
    for n, name in ((0, "corpus_and_upstream"), (1, "data_prep"), (2, "dump")):
        assert f"stage {n} ({name}): done" in proc.stdout
    release = Path((work / "data" / "local" / "release_dir").read_text().strip())
    assert len(list((release / "clips").iterdir())) == 46
    upstream = Path((work / "exp" / "stage0" / "upstream").read_text().strip())
    assert upstream.is_file() and upstream.name == "wav2vec2_tiny_random.pt"
    for split in ("train", "dev", "test"):
        assert validate_data_dir(work / "data" / split) == []
        assert validate_data_dir(work / "dump" / split) == []
    assert (work / "data" / "prep_report.json").is_file()
    assert "train: kept 24 of 24 clips" in (work / "exp" / "logs" / "stage2_dump.log").read_text()

    again = run("--demo", "true", "--demo_size", "small", "--work_dir", work, "--stop-stage", "2")
    assert again.stdout.count("already done with these inputs, skipping") == 3

    # Stages 3-5 with one quick epoch end in RESULTS.md, CTC alone and with the word LM.
    final = run("--demo", "true", "--demo_size", "small", "--work_dir", work, "--stage", "3",
                "--train_args", "--max_epoch 1 --batch_size 8")
    assert "stage 5 (decode_and_score): done" in final.stdout
    assert "word 4-gram LM: 24 lines (24 train)" in final.stdout
    assert "chose lm_weight" in final.stdout
    results = (work / "RESULTS.md").read_text(encoding="utf-8")
    assert "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|" in results
    for name in ("decode_ctc/dev", "decode_ctc_lm/dev", "decode_ctc/test", "decode_ctc_lm/test"):
        assert f"|[{name}](exp/asr_train_demo_ctc_char/{name}/score_cer/result.txt)|" in results
    assert "- decode_ctc: CTC prefix beam 10, batch 8" in results
    assert "- decode_ctc_lm: CTC prefix beam 50 with the word LM data/lm (weight" in results
    assert str(work) not in results  # paths relative to the work dir
    exp = work / "exp" / "asr_train_demo_ctc_char"
    assert "lm: ../../data/lm" in (exp / "decoding.yaml").read_text()

    # --use_lm false: stage 3 again without the LM, no retraining, stage 5 CTC alone
    no_lm = run("--demo", "true", "--demo_size", "small", "--work_dir", work, "--stage", "3",
                "--use_lm", "false", "--train_args", "--max_epoch 1 --batch_size 8")
    assert "stage 4 (train): already done with these inputs" in no_lm.stdout
    assert "word 4-gram LM" not in no_lm.stdout and "tune" not in no_lm.stdout
    results = (work / "RESULTS.md").read_text(encoding="utf-8")
    assert "decode_ctc/test" in results and "decode_ctc_lm" not in results
    assert "lm: null" in (exp / "decoding.yaml").read_text()

    # A changed stage-1 input re-runs stage 1, and stage 2 after it, which follows stage 1.
    changed = run("--demo", "true", "--demo_size", "small", "--work_dir", work, "--stage", "1",
                  "--stop-stage", "2", "--max_drop", "0.2")
    assert "stage 1 (data_prep): inputs changed" in changed.stdout
    assert "stage 2 (dump): inputs changed" in changed.stdout

    # The console: what each stage did, no library chatter; the stage logs keep everything.
    console = final.stdout + final.stderr
    for chatter in ("nltk", "Warning", " INFO: ", "Model structure", "Flash Attention"):
        assert chatter not in console, chatter
    assert "epoch 1/1  train loss " in console
    for label in ("dev   CTC alone    WER ", "test  with the LM  CER "):
        assert label in console
    assert f"RESULTS.md: {work}/RESULTS.md" in console
    logs = work / "exp" / "logs"
    stage4 = (logs / "stage4_train.log").read_text(encoding="utf-8")
    assert "Model structure" in stage4 and "1epoch results: [train]" in stage4
    stage5 = (logs / "stage5_decode_and_score.log").read_text(encoding="utf-8")
    assert "  lm_weight " in stage5 and "  lm_weight " not in console  # the LM grid: log only
    assert "nltk" not in "".join(p.read_text(encoding="utf-8") for p in logs.iterdir())
    images = {p.name for p in (work / "exp" / "asr_train_demo_ctc_char" / "images").iterdir()}
    assert {"loss_ctc.png", "cer_ctc.png", "wer_ctc.png"} <= images
    assert not images & {"acc.png", "cer.png", "wer.png", "loss_att.png"}  # NaN for CTC alone

    # A config value of the wrong type stops stage 3, naming the key.
    conf = yaml.safe_load((RECIPE / "conf" / "train_demo_ctc.yaml").read_text())
    conf["optim_conf"]["lr"] = "fast"
    bad = tmp_path / "train_fast.yaml"
    bad.write_text(yaml.safe_dump(conf))
    typed = run("--demo", "true", "--demo_size", "small", "--work_dir", work, "--stage", "3",
                "--stop-stage", "3", "--train_config", bad, check=False)
    assert typed.returncode == 1
    assert (f"cvasr collect-stats: error: {bad}: optim_conf.lr must be float | torch.Tensor (as "
            "AdamW declares), got str 'fast'") in typed.stdout

    # The config edited (a lower learning rate; same file name, so the same experiment): stage
    # 4 runs again and refuses to resume with it.
    conf["optim_conf"]["lr"] = 1.0e-3
    lower = tmp_path / "edited" / "train_demo_ctc.yaml"
    lower.parent.mkdir()
    lower.write_text(yaml.safe_dump(conf))
    args = ["--demo", "true", "--demo_size", "small", "--work_dir", work, "--stage", "4",
            "--stop-stage", "4", "--train_config", lower]
    refused = run(*args, "--train_args", "--max_epoch 2 --batch_size 8", check=False)
    assert refused.returncode == 1
    assert "stage 4 (train): inputs changed since it last ran" in refused.stdout
    assert ("resuming cannot honour the change (the optimizer): optim_conf.lr 0.002 -> 0.001. "
            "Train a new experiment (run.sh --asr_tag NAME") in refused.stdout
    assert "stage 4 (train): FAILED" in refused.stdout
    exp = work / "exp" / "asr_train_demo_ctc_char"
    assert yaml.safe_load((exp / "config.yaml").read_text())["optim_conf"]["lr"] == 0.002
    # the first way on: a new experiment
    tagged = run(*args, "--asr_tag", "lower_lr", "--train_args", "--max_epoch 1 --batch_size 8")
    assert f"training {work}/exp/asr_lower_lr from the start (1 epoch)" in tagged.stdout
    tagged_config = yaml.safe_load((work / "exp" / "asr_lower_lr" / "config.yaml").read_text())
    assert tagged_config["optim_conf"]["lr"] == 0.001


def _blocking_recipe(tmp_path: Path) -> Path:
    """A recipe whose corpus step (stage 0) waits until local/go exists."""
    recipe = _recipe_with_own_local(tmp_path)
    (recipe / "local" / "data.sh").write_text(
        '#!/usr/bin/env bash\n'
        'set -euo pipefail\n'
        'case " $* " in *" --validate_only true "*) exit 0 ;; esac\n'
        'here=$(dirname "$0"); touch "$here/started"\n'
        'while [ ! -e "$here/go" ]; do sleep 0.1; done\n'
        'echo "corpus ready"\n')
    return recipe


def test_a_second_run_on_a_work_dir_stops_at_once_naming_the_first(tmp_path: Path,
                                                                    tiny_upstream: Path) -> None:
    recipe = _blocking_recipe(tmp_path)
    work = tmp_path / "work"
    line = [str(recipe / "run.sh"), "--upstream_ckpt", str(tiny_upstream), "--work_dir",
            str(work), "--stop-stage", "0"]
    first = subprocess.Popen(line, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (recipe / "local" / "started").exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never reached stage 0"
            time.sleep(0.1)
        # the first run holds the work dir, waiting: the second cannot wait for it
        second = subprocess.run(line, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        # (this recipe's run.sh does not name itself to asr.sh, as egs/*/run.sh do)
        asr_sh = recipe / "asr.sh"
        assert second.stderr.startswith(f"{asr_sh}: another run is using {work} "
                                         f"(pid {first.pid}, started ")
        assert f": {asr_sh} --lang xx --upstream_ckpt {tiny_upstream}" in second.stderr
        assert f"the lock is {work}/exp/run.lock" in second.stderr
        assert "stage 0" not in second.stdout
    finally:
        (recipe / "local" / "go").touch()
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert "stage 0 (corpus_and_upstream): done" in out
    # released at the end: the next run goes ahead
    third = subprocess.run(line, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and "already done with these inputs" in third.stdout


def test_stage0_and_1_run_local_data_sh(cv_args: list[str], tmp_path: Path) -> None:
    """asr.sh's stages 0-1 are local/data.sh's, with the corpus options handed on unchanged."""
    work = tmp_path / "work"
    run(*cv_args, "--stage", "0", "--stop-stage", "1", "--nj", "1")
    log0 = (work / "exp" / "logs" / "stage0_corpus_and_upstream.log").read_text()
    assert "release: " in log0 and "upstream: " in log0
    log1 = (work / "exp" / "logs" / "stage1_data_prep.log").read_text()
    assert "text normaliser for 'as': assamese (as-1)" in log1
    assert sorted(p.name for p in (work / "data").iterdir()) == [
        "dev", "local", "prep_report.json", "test", "train"]


def _recipe_with_own_local(tmp_path: Path) -> Path:
    """A recipe dir for another corpus: TEMPLATE's stages, a local/data.sh of its own."""
    template = RECIPE.parent / "TEMPLATE"
    recipe = tmp_path / "egs" / "other"
    (recipe / "local").mkdir(parents=True)
    for name in ("asr.sh", "path.sh", "utils"):
        (recipe / name).symlink_to(template / name)
    (recipe / "conf").symlink_to(RECIPE / "conf")
    # path.sh finds the package two levels up from the recipe dir
    (tmp_path / ".venv").symlink_to(RECIPE.parents[1] / ".venv")
    (tmp_path / "src").symlink_to(RECIPE.parents[1] / "src")
    (recipe / "run.sh").write_text('#!/usr/bin/env bash\nexec "$(dirname "$0")/asr.sh" --lang xx "$@"\n')
    (recipe / "local" / "data.sh").write_text(
        '#!/usr/bin/env bash\n'
        '# another corpus: records how it was called, accepts one option of its own\n'
        'set -euo pipefail\n'
        'for a in "$@"; do printf "%s\\n" "$a"; done > "$(dirname "$0")/called.$$"\n'
        'case " $* " in *" --validate_only true "*) exit 0 ;; esac\n'
        'case " $* " in *" --corpus_flavour sweet "*) ;; *) echo "bad corpus option" >&2; exit 2 ;; esac\n'
        'args=" $* "; stage=${args#* --stage }; echo "corpus ready, stage ${stage%% *}"\n')
    for script in ("run.sh", "local/data.sh"):
        (recipe / script).chmod(0o755)
    return recipe


def test_another_corpus_swaps_local_and_keeps_the_stages(tmp_path: Path,
                                                         tiny_upstream: Path) -> None:
    recipe = _recipe_with_own_local(tmp_path)
    proc = subprocess.run([str(recipe / "run.sh"), "--corpus_flavour", "sweet", "--upstream_ckpt",
                           str(tiny_upstream), "--stop-stage", "1", "--nj", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    logs = recipe / "exp" / "logs"  # what the corpus script prints goes to the stage logs
    assert "corpus ready, stage 0" in (logs / "stage0_corpus_and_upstream.log").read_text()
    assert "corpus ready, stage 1" in (logs / "stage1_data_prep.log").read_text()
    assert "corpus ready" not in proc.stdout
    assert "stage 1 (data_prep): done" in proc.stdout
    calls = [p.read_text().split("\n") for p in (recipe / "local").glob("called.*")]
    stage_calls = [c for c in calls if "--stage" in c]
    assert len(stage_calls) == 2
    for call in stage_calls:
        assert call[call.index("--lang") + 1] == "xx"
        assert call[call.index("--corpus_flavour") + 1] == "sweet"
        assert call[call.index("--work_dir") + 1] == str(recipe)
    bad = subprocess.run([str(recipe / "run.sh"), "--corpus_flavour", "sour"], capture_output=True,
                         text=True, timeout=300)
    # a failed stage shows the end of its log: the script's error, said only to stderr
    assert bad.returncode == 1
    assert "stage 0 (corpus_and_upstream): FAILED (exit 2); the whole output is in " in bad.stdout
    assert bad.stdout.endswith("which ends:\n    bad corpus option\n")


def test_generic_recipe_needs_a_language() -> None:
    proc = subprocess.run([str(RECIPE.parent / "cv" / "run.sh"), "--stop-stage", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--lang is required" in proc.stderr
    demo = subprocess.run([str(RECIPE.parent / "cv" / "run.sh"), "--lang", "bn", "--demo", "true"],
                          capture_output=True, text=True, timeout=60)
    assert demo.returncode == 2 and "the embedded demo corpus is Assamese" in demo.stderr
