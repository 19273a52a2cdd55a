"""The training-speed benchmark runs end to end (tiny upstream, CPU) and records what NOTES.md cites."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_throughput_smoke_run_writes_comparable_rows(tmp_path: Path) -> None:
    out = tmp_path / "throughput.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "train_throughput.py"), "--arch", "tiny",
         "--device", "cpu", "--clips", "12", "--epochs", "2", "--num-workers", "2",
         "--only", "ours_6", "ours_7", "ours_8", "ours_10", "ours_11", "ours_12", "ours_13",
         "--try", "no fused Adam, batches of 5=--optim_conf fused=false --batch_size 5",
         "--work", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["failed"] == {}
    assert list(result["runs"]) == ["ours_6", "ours_7", "ours_8", "ours_10", "ours_11", "ours_12",
                                    "ours_13", "try_1"]
    assert result["speedup_vs_seed_stack"] is None  # no seed rows were run
    rows = result["runs"]
    for row in rows.values():
        assert len(row["epochs"]) == 2 and row["audio_seconds_per_s"] > 0
        assert {"loss_ctc", "forward_time", "backward_time", "iter_time"} <= set(row["epochs"][0])
    # the conv-feature cache (row 7), the sync-free loop (row 8) and workers kept across epochs
    # (row 10; the compile of row 9 is GPU-only) change no number that is learned (row 6 is
    # without any of them)
    for row in ("ours_7", "ours_8", "ours_10"):
        assert [e["loss_ctc"] for e in rows[row]["epochs"]] == pytest.approx(
            [e["loss_ctc"] for e in rows["ours_6"]["epochs"]], rel=1e-5)
    # row 11 draws its SpecAugment masks on the device, from the same distribution, not the
    # same draws (its CUDA graphs and Triton CTC are GPU-only): it trains; row 12 (the committed
    # config) trains without the checkpoint's dropouts: other numbers again
    for row, before in (("ours_11", "ours_10"), ("ours_12", "ours_11")):
        assert all(e["loss_ctc"] > 0 for e in rows[row]["epochs"])
        assert rows[row]["epochs"][0]["loss_ctc"] != rows[before]["epochs"][0]["loss_ctc"]
    # row 13 (the committed config) adds the bf16 weight copies, which the CPU runs without
    # (logged), and the clip inside fused Adam's kernel: the same numbers up to rounding
    assert [e["loss_ctc"] for e in rows["ours_13"]["epochs"]] == pytest.approx(
        [e["loss_ctc"] for e in rows["ours_12"]["epochs"]], rel=1e-4)
    assert "(b) + bf16 weight copies, clip in fused Adam (= committed config)" in run.stdout
    # steps are counted from espnet2's sorted sampler: 12 // 5 batches, not ceil(12 / 5)
    assert rows["try_1"]["steps_per_epoch"] == 2 and rows["ours_8"]["steps_per_epoch"] == 1


def _load(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_allreduce_bus_bandwidth_is_nccl_tests_definition() -> None:
    bus_bandwidth = _load("allreduce").bus_bandwidth
    assert bus_bandwidth(10**9, 1.0, 2) == pytest.approx(1.0)   # 2 ranks: each byte crosses once
    assert bus_bandwidth(10**9, 2.0, 4) == pytest.approx(0.75)  # 2 (n-1)/n of the data, per second


@pytest.mark.slow
def test_allreduce_smoke_run_on_two_cpu_ranks(tmp_path: Path) -> None:
    out = tmp_path / "allreduce.json"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         str(REPO / "bench" / "allreduce.py"), "--device", "cpu", "--sizes-m", "0.5",
         "--iters", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["backend"] == "gloo"
    assert [(r["elements_m"], r["dtype"]) for r in result["rows"]] == [
        (0.5, "float32"), (0.5, "bfloat16")]
    assert all(r["seconds"] > 0 and r["bus_gb_per_s"] > 0 for r in result["rows"])


def test_train_e2e_reads_epoch_times_from_espnet2s_log(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from train_e2e import espnet2_epochs, per_epoch

    log = tmp_path / "train.log"
    log.write_text(
        "[vm] 2026-11-30 01:38:38,000 (trainer:324) INFO: 1/3epoch started\n"
        "[vm] 2026-11-30 01:38:50,500 (trainer:394) INFO: 1epoch results: [train] iter_time=0.1, "
        "loss_ctc=9.0, time=12.0 seconds, total_count=15, [valid] loss_ctc=8.0, time=0.5 seconds, "
        "total_count=3\n"
        "[vm] 2026-11-30 01:38:53,000 (trainer:394) INFO: 2epoch results: [train] loss_ctc=7.0, "
        "time=1 second, total_count=30, [valid] loss_ctc=6.0, time=0 seconds, total_count=3\n"
        "[vm] 2026-11-30 01:38:55,700 (trainer:394) INFO: 3epoch results: [train] loss_ctc=5.0, "
        "time=1 minute and 2.25 seconds, [valid] loss_ctc=4.0, time=0.25 seconds\n",
        encoding="utf-8")
    rows = espnet2_epochs(log)
    assert [(r["epoch"], r["train_seconds"], r["valid_seconds"]) for r in rows] == [
        (1, 12.0, 0.5), (2, 1.0, 0.0), (3, 62.25, 0.25)]
    timed = per_epoch(rows)
    # epochs 2 and 3: results logged 2.5 s and 2.7 s after the epoch before
    assert timed["wall_s_per_epoch"] == pytest.approx(2.6)
    assert timed["train_s_per_epoch"] == pytest.approx((1.0 + 62.5) / 2)
    with pytest.raises(ValueError, match="at least 3 epochs"):
        per_epoch(rows[:2])


def test_train_e2e_reads_whether_the_transformer_was_compiled(tmp_path: Path) -> None:
    """From the command stage 4 logged first: the last --compile_upstream counts (the one
    compile_upstream: auto added after the user's)."""
    sys.path.insert(0, str(REPO / "bench"))
    from train_e2e import transformer_compiled

    log = tmp_path / "train.log"
    for command, compiled in (("--max_epoch 50 --compile_upstream false --ngpu 1", False),
                              ("--compile_upstream false --compile_upstream True --ngpu 1", True),
                              ("--max_epoch 50 --ngpu 1", None)):
        log.write_text(f"# python3 -m cvasr.training.task --config c.yaml {command}\n"
                       "[vm] 2026-12-01 20:47:24,405 (abs_task:1885) INFO: --compile_upstream "
                       "true\n", encoding="utf-8")
        assert transformer_compiled(log) is compiled, command


def test_scaling_corpus_holds_the_hours_asked_for(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from train_gpu import rank0_lines, synth_release

    import soundfile as sf

    from cvasr.corpora.commonvoice import read_tsv

    hours = 0.05  # 180 s
    synth_release(tmp_path / "as", hours, dev_clips=3)
    train = read_tsv(tmp_path / "as" / "train.tsv").rows
    seconds = [sf.info(str(tmp_path / "as" / "clips" / row["path"])).duration for row in train]
    assert sum(seconds) >= hours * 3600 > sum(seconds[:-1])  # the fewest clips that fill it
    assert len(read_tsv(tmp_path / "as" / "dev.tsv").rows) == 3
    lines = ["[host] 1epoch results", "[gpu-7:0/2] 1epoch results", "[gpu-7:1/2] 1epoch results"]
    assert rank0_lines(lines, 1) == lines[:1] and rank0_lines(lines, 2) == lines[1:2]


def test_train_e2e_merges_runs_of_one_machine_and_refuses_others(tmp_path: Path) -> None:
    """bench/gpu_stage4.sh e2e2: two GPUs' JSONs become one result with each run's speedup
    over the seed's stack; JSONs of another revision, or with the same run twice, are refused."""
    sys.path.insert(0, str(REPO / "bench"))
    from train_e2e import merge

    common = {"benchmark": "train_e2e", "git_revision": "abc", "gpu": "H200", "torch": "2.11",
              "python": "3.12", "config": "c.yaml", "arch": "xls_r_300m", "clips": 560,
              "audio_seconds_per_epoch": 2907.0}
    # epochs ending every 1.5 s (ours), 2.0 s (eager) and 4.5 s (the seed's stack), one of the
    # seed's warm-up epochs and one of ours slower
    ours_ends = [260.0 + 1.5 * i + (1.0 if i >= 10 else 0.0) for i in range(50)]
    ours = {"wall_s_per_epoch": 1.5, "train_s_per_epoch": 1.4, "wall_over_train": 1.071,
            "first_epoch_wall_s": 260.0, "epochs_log": [{"logged_at": t} for t in ours_ends]}
    eager = dict(ours, wall_s_per_epoch=2.0, train_s_per_epoch=1.9, wall_over_train=1.053,
                 epochs_log=[{"logged_at": 30.0 + 2.0 * i} for i in range(50)])
    seed_ends = [15.0 + 4.5 * i + (3.0 if i >= 2 else 0.0) for i in range(25)]
    seed = {"wall_s_per_epoch": 4.5, "first_epoch_wall_s": 15.0,
            "epochs": [{"end": t} for t in seed_ends]}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({**common, "runs": {"ours": ours}}))
    b.write_text(json.dumps({**common, "runs": {"ours_eager": eager, "seed": seed}}))
    out = tmp_path / "merged.json"
    assert merge([a, b], out) == 0
    merged = json.loads(out.read_text())
    assert list(merged["runs"]) == ["ours", "ours_eager", "seed"]
    assert (merged["speedup_end_to_end"], merged["speedup_end_to_end_eager"]) == (3.0, 2.25)
    assert (merged["wall_s_per_epoch"], merged["seed_wall_s_per_epoch"]) == (1.5, 4.5)
    # the spread of the epochs' wall times, from their end times: medians 1.5 and 4.5; after
    # the seed's warm-up (epoch 3 took 7.5 s) it is 4.5 s an epoch
    runs = merged["runs"]
    assert [11, 2.5] in runs["ours"]["slowest_epochs"]
    assert [3, 7.5] in runs["seed"]["slowest_epochs"]
    assert (runs["ours"]["speedup_end_to_end_median"],
            runs["ours_eager"]["speedup_end_to_end_median"]) == (3.0, 2.25)
    assert runs["seed"]["wall_s_per_epoch_after_warm_up"] == 4.5
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**common, "git_revision": "def", "runs": {"seed": seed}}))
    with pytest.raises(SystemExit, match="git_revision"):
        merge([a, other], out)
    # unless told the revisions differ outside the code timed: then both are named
    assert merge([a, other], out, revisions_may_differ=True) == 0
    merged = json.loads(out.read_text())
    assert merged["git_revision"] == "abc / def" and merged["speedup_end_to_end"] == 3.0
    assert [m["git_revision"] for m in merged["merged_from"]] == ["abc", "def"]
    fewer = tmp_path / "fewer.json"  # other clips are another comparison all the same
    fewer.write_text(json.dumps({**common, "clips": 508, "runs": {"seed": seed}}))
    with pytest.raises(SystemExit, match="clips"):
        merge([a, fewer], out, revisions_may_differ=True)
    with pytest.raises(SystemExit, match="run ours is in two"):
        merge([a, a], out)


def test_train_gpu_reports_the_scaling_of_each_launcher(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    sys.path.insert(0, str(REPO / "bench"))
    from train_gpu import report

    monkeypatch.setenv("CVASR_GIT_REV", "abc")

    def run(gpus: int, audio_s_per_s: float) -> dict:
        return {"gpus": gpus, "epochs": [{}, {}], "optimizer_steps_per_s": 1.0,
                "audio_seconds_per_s": audio_s_per_s, "peak_mem_gb": 1.0}

    args = argparse.Namespace(summarize=None, extra=["--cudnn_benchmark", "false"],
                              out=tmp_path / "gpu.json", batch_per_gpu=32)
    report({"1gpu": run(1, 1000.0), "2gpu": run(2, 1640.0), "2gpu_torchrun": run(2, 1540.0)},
           args, "H200", "2.11", "10 h", corpus_hours=10.0)
    result = json.loads(args.out.read_text())
    assert (result["scaling_2gpu"], result["scaling_2gpu_torchrun"]) == (1.64, 1.54)
    assert result["corpus_hours"] == 10.0 and result["git_revision"] == "abc"
    report({"2gpu": run(2, 1640.0)}, args, "H200", "2.11", "10 h")  # no 1-GPU run: no ratio
    assert "scaling_2gpu" not in json.loads(args.out.read_text())


def test_train_gpu_plans_a_run_for_each_launcher_and_try() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from train_gpu import planned_runs

    runs = planned_runs([1, 2], ["espnet2", "torchrun_2nodes"],
                        ["bf16_hook=--ddp_comm_hook bf16_compress_hook",
                         "ctas=NCCL_MAX_CTAS=8 NCCL_MIN_CTAS=8",
                         "both=NCCL_MAX_CTAS=8 --ddp_comm_hook bf16_compress_hook"])
    hook = ["--ddp_comm_hook", "bf16_compress_hook"]
    assert runs == [("1gpu", 1, "espnet2", [], {}), ("2gpu", 2, "espnet2", [], {}),
                    ("2gpu_torchrun_2nodes", 2, "torchrun_2nodes", [], {}),
                    ("2gpu_bf16_hook", 2, "espnet2", hook, {}),
                    ("2gpu_ctas", 2, "espnet2", [], {"NCCL_MAX_CTAS": "8", "NCCL_MIN_CTAS": "8"}),
                    ("2gpu_both", 2, "espnet2", hook, {"NCCL_MAX_CTAS": "8"})]
    for bad in ("bf16 hook=--x y", "--ddp_comm_hook", "name="):
        with pytest.raises(ValueError, match="NAME=OPTIONS"):
            planned_runs([1, 2], ["espnet2"], [bad])


def test_train_gpu_environment_is_added_for_the_block_and_restored(monkeypatch) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from train_gpu import environment

    monkeypatch.setenv("CVASR_TEST_KEPT", "before")
    monkeypatch.delenv("CVASR_TEST_NEW", raising=False)
    with environment({"CVASR_TEST_KEPT": "during", "CVASR_TEST_NEW": "1"}):
        assert os.environ["CVASR_TEST_KEPT"] == "during" and os.environ["CVASR_TEST_NEW"] == "1"
    assert os.environ["CVASR_TEST_KEPT"] == "before" and "CVASR_TEST_NEW" not in os.environ


def test_summarise_gives_the_rate_over_the_timed_epochs_and_at_their_median() -> None:
    summarise = _load("train_throughput").summarise
    epochs = [{"train_seconds": s} for s in (60.0, 1.0, 2.0, 4.0)]  # the first: a compile
    row = summarise({"epochs": epochs}, audio_per_epoch=100.0, warmup=1, flops=2.0, peak=1000.0,
                    steps_per_epoch=10)
    assert row["epochs_timed"] == 3
    assert row["audio_seconds_per_s"] == 42.9  # 300 audio-s in 7 s: the slow epoch weighs in
    assert row["audio_seconds_per_s_median_epoch"] == 50.0  # 100 audio-s in the median 2 s
    assert row["steps_per_s"] == 4.29 and row["fraction_of_peak"] == 0.0857


def test_train_throughput_names_the_torch_settings_a_row_left_changed() -> None:
    """What the seed's stack leaves changed for our rows after it (a flag, a compiler config):
    exactly the settings changed, each with its value before and after."""
    import torch
    import torch._inductor.config

    bench = _load("train_throughput")
    before = bench.torch_settings()
    assert bench.changed_settings(before, bench.torch_settings()) == {}
    deterministic = torch.backends.cudnn.deterministic
    threads = torch._inductor.config.compile_threads
    try:
        torch.backends.cudnn.deterministic = not deterministic
        torch._inductor.config.compile_threads = threads + 1
        assert bench.changed_settings(before, bench.torch_settings()) == {
            "cudnn.deterministic": [deterministic, not deterministic],
            "inductor.compile_threads": [repr(threads), repr(threads + 1)]}
    finally:
        torch.backends.cudnn.deterministic = deterministic
        torch._inductor.config.compile_threads = threads


def test_trace_kernels_counts_the_matching_kernels_and_their_grids() -> None:
    kernel_summary = _load("trace_kernels").kernel_summary
    trace = {"traceEvents": [  # two dgrad kernels on two streams, overlapping by 50 us
        {"cat": "kernel", "name": "cutlass_dgrad_a", "ts": 0.0, "dur": 300.0,
         "args": {"grid": [43, 1, 1], "stream": 13}},
        {"cat": "kernel", "name": "cutlass_dgrad_a", "ts": 250.0, "dur": 100.0,
         "args": {"grid": [43, 1, 1], "stream": 14}},
        {"cat": "kernel", "name": "cutlass_fprop_b", "ts": 1000.0, "dur": 50.0,
         "args": {"grid": [86, 1, 1], "stream": 7}},
        {"cat": "cpu_op", "name": "aten::cudnn_convolution_dgrad", "ts": 0.0, "dur": 900.0}]}
    assert kernel_summary(trace, "dgrad") == {"calls": 2, "total_us": 400.0, "busy_us": 350.0,
                                              "mean_us": 200.0, "streams": 2,
                                              "grids": [("[43, 1, 1]", 2)]}
    everything = kernel_summary(trace, "")  # the CPU op is no kernel
    assert (everything["calls"], everything["busy_us"], everything["streams"]) == (3, 400.0, 3)
    assert kernel_summary(trace, "wgrad")["mean_us"] is None


def test_busy_time_counts_nested_and_disjoint_kernels_once() -> None:
    busy_us = _load("trace_kernels").busy_us
    kernels = [{"ts": 0.0, "dur": 100.0}, {"ts": 10.0, "dur": 20.0},  # nested
               {"ts": 90.0, "dur": 30.0}, {"ts": 200.0, "dur": 5.0}]  # overlapping, disjoint
    assert busy_us(kernels) == 125.0
    assert busy_us([]) == 0.0


def _launch(correlation: int, ts: float) -> dict:
    return {"cat": "cuda_runtime", "name": "cudaLaunchKernel", "tid": 1, "ts": ts, "dur": 2.0,
            "args": {"correlation": correlation}}


def _gpu(name: str, ts: float, dur: float, correlation: int, cat: str = "kernel") -> dict:
    return {"cat": cat, "name": name, "ts": ts, "dur": dur, "args": {"correlation": correlation}}


def test_trace_kernels_charges_each_gpu_idle_gap_to_the_op_that_ended_it() -> None:
    trace_kernels = _load("trace_kernels")
    trace = {"traceEvents": [
        {"cat": "python_function", "name": "train_throughput.py(659): <module>", "tid": 1,
         "ts": 0.0, "dur": 2000.0},  # a --profile-stack trace's frames: no launcher
        {"cat": "user_annotation", "name": "ProfilerStep#7", "tid": 1, "ts": 0.0, "dur": 1000.0},
        {"cat": "cpu_op", "name": "aten::mm", "tid": 1, "ts": 10.0, "dur": 50.0},
        _launch(1, 20.0), _gpu("nvjet_mm", 30.0, 100.0, 1),
        {"cat": "cpu_op", "name": "Torch-Compiled Region: 0/0", "tid": 1, "ts": 100.0,
         "dur": 300.0},
        {"cat": "cpu_op", "name": "## Call CompiledFxGraph", "tid": 1, "ts": 110.0, "dur": 250.0},
        _launch(2, 300.0), _gpu("triton_poi_fused", 310.0, 50.0, 2),  # 180 us idle before it
        {"cat": "cpu_op", "name": "aten::copy_", "tid": 1, "ts": 361.0, "dur": 20.0},
        _launch(3, 362.0), _gpu("Memcpy HtoD", 365.0, 10.0, 3, "gpu_memcpy"),  # 5 us: too short
        _launch(4, 480.0), _gpu("fill_kernel", 500.0, 20.0, 4),  # launched in the step alone
        {"cat": "user_annotation", "name": "Optimizer.step#Adam.step", "tid": 1, "ts": 600.0,
         "dur": 100.0},
        _launch(5, 610.0), _gpu("multi_tensor_apply", 700.0, 10.0, 5),
        _launch(6, 620.0), _gpu("multi_tensor_apply", 705.0, 10.0, 6),  # overlaps: no gap
        _gpu("after_the_step", 2000.0, 10.0, 7)]}  # outside the profiled step: not counted
    gaps = trace_kernels.idle_gaps(trace)
    assert [(g["start"], g["us"], g["next"]) for g in gaps] == [
        (130.0, 180.0, "triton_poi_fused"), (375.0, 125.0, "fill_kernel"),
        (520.0, 180.0, "multi_tensor_apply")]
    assert gaps[0]["launched_in"] == ["ProfilerStep#7", "Torch-Compiled Region: 0/0",
                                      "## Call CompiledFxGraph"]
    assert trace_kernels.idle_by_launcher(gaps) == {
        "Torch-Compiled Region: 0/0": {"gaps": 1, "idle_us": 180.0},
        "Optimizer.step#Adam.step": {"gaps": 1, "idle_us": 180.0},
        "(no CPU op)": {"gaps": 1, "idle_us": 125.0}}
    assert [g["us"] for g in trace_kernels.idle_gaps(trace, min_gap_us=150.0)] == [180.0, 180.0]
    # the kernel at 310 and the copy at 365, both launched inside the region (100-400)
    assert trace_kernels.gpu_work_launched_in(trace, "Torch-Compiled Region") == (2, 60.0)
    assert trace_kernels.gpu_work_launched_in(trace, "Optimizer.step") == (2, 15.0)
    assert trace_kernels.match_launchers(trace, "multi_tensor_apply") == [
        ("Optimizer.step#Adam.step", 2)]
    # every kernel with an underscore; "after_the_step" has no launch in the trace
    assert dict(trace_kernels.match_launchers(trace, "_", count=10)) == {
        "Optimizer.step#Adam.step": 2, "(no CPU op)": 2, "Torch-Compiled Region: 0/0": 1,
        "aten::mm": 1}


def test_trace_kernels_epoch_timeline_finds_the_start_and_the_long_gaps() -> None:
    trace_kernels = _load("trace_kernels")
    trace = {"traceEvents": [  # microseconds; an epoch of two steps, the batch awaited first
        {"cat": "cpu_op", "name": "enumerate(DataLoader)#__next__", "tid": 1, "ts": 0.0,
         "dur": 5000.0},
        {"cat": "cpu_op", "name": "aten::copy_", "tid": 1, "ts": 5000.0, "dur": 100.0},
        _launch(1, 5010.0), _gpu("Memcpy HtoD", 5050.0, 50.0, 1, "gpu_memcpy"),
        {"cat": "cpu_op", "name": "Torch-Compiled Region: 0/0", "tid": 1, "ts": 5200.0,
         "dur": 500.0},
        _launch(2, 5300.0), _gpu("graph_kernel", 5400.0, 3000.0, 2),
        _gpu("graph_kernel_2", 8000.0, 1000.0, 2),  # overlaps the first: one busy stretch
        {"cat": "cpu_op", "name": "enumerate(DataLoader)#__next__", "tid": 1, "ts": 6000.0,
         "dur": 4500.0},  # the second batch late: the GPU waits 9000 -> 10600
        {"cat": "cpu_op", "name": "Optimizer.step#Adam.step", "tid": 1, "ts": 10550.0,
         "dur": 100.0},
        _launch(3, 10560.0), _gpu("multi_tensor_apply", 10600.0, 400.0, 3),
        _launch(4, 10570.0), _gpu("multi_tensor_apply", 11500.0, 500.0, 4),  # 500 us: too short
        {"cat": "cpu_op", "name": "thread 2's op", "tid": 2, "ts": 0.0, "dur": 12000.0}]}
    timeline = trace_kernels.epoch_timeline(trace)
    assert timeline == {
        "span_ms": 12.0, "busy_ms": 4.55, "idle_ms": 7.45, "before_first_gpu_work_ms": 5.05,
        "first_gpu_work_launched_in": "aten::copy_",
        "gaps": [{"at_ms": 9.0, "ms": 1.6, "ended_by": "Optimizer.step#Adam.step",
                  "cpu_meanwhile": "enumerate(DataLoader)#__next__"}]}


def test_trace_kernels_splits_the_cpu_time_inside_an_op_into_total_and_self() -> None:
    trace_kernels = _load("trace_kernels")
    call = {"cat": "cpu_op", "name": "## Call CompiledFxGraph f4a3", "tid": 1, "dur": 250.0}
    trace = {"traceEvents": [
        {**call, "ts": 0.0},
        {"cat": "python_function", "name": "cudagraph_trees.py: run", "tid": 1, "ts": 10.0,
         "dur": 200.0},
        {"cat": "python_function", "name": "cudagraph_trees.py: _check_liveness", "tid": 1,
         "ts": 20.0, "dur": 100.0},
        {"cat": "python_function", "name": "cudagraph_trees.py: run", "tid": 1, "ts": 150.0,
         "dur": 50.0},  # called inside itself: its total counts the outer call alone
        {"cat": "cuda_driver", "name": "cudaGraphLaunch", "tid": 1, "ts": 190.0, "dur": 5.0},
        {"cat": "python_function", "name": "elsewhere", "tid": 2, "ts": 30.0, "dur": 10.0},
        {**call, "ts": 1000.0},  # a second call with nothing measured inside
        {"cat": "python_function", "name": "after", "tid": 1, "ts": 300.0, "dur": 10.0}]}
    count, rows = trace_kernels.nested_cpu_time(trace, "## Call CompiledFxGraph")
    assert count == 2
    assert rows == {
        "cudagraph_trees.py: run": {"calls": 2, "total_us": 200.0, "self_us": 95.0},
        "cudagraph_trees.py: _check_liveness": {"calls": 1, "total_us": 100.0, "self_us": 100.0},
        "cudaGraphLaunch": {"calls": 1, "total_us": 5.0, "self_us": 5.0}}


def test_trace_kernels_counts_the_cpus_waits_for_the_gpu_in_each_step() -> None:
    """Only syncing CUDA calls of the step's own thread, inside the step, count as waiting."""
    trace_kernels = _load("trace_kernels")

    def runtime(name: str, ts: float, dur: float, tid: int = 1) -> dict:
        return {"cat": "cuda_runtime", "name": name, "tid": tid, "ts": ts, "dur": dur}

    trace = {"traceEvents": [
        {"cat": "user_annotation", "name": "ProfilerStep#9", "tid": 1, "ts": 1000.0,
         "dur": 500.0},
        {"cat": "user_annotation", "name": "ProfilerStep#8", "tid": 1, "ts": 0.0, "dur": 1000.0},
        {"cat": "gpu_user_annotation", "name": "ProfilerStep#8", "tid": 7, "ts": 0.0,
         "dur": 1200.0},
        runtime("cudaStreamSynchronize", 100.0, 300.0),
        runtime("cudaMemcpyAsync", 90.0, 5.0),  # queues a copy: no wait
        runtime("cudaEventSynchronize", 700.0, 50.0),
        runtime("cudaStreamSynchronize", 200.0, 400.0, tid=2),  # another thread's wait
        runtime("cudaDeviceSynchronize", 1600.0, 80.0)]}  # after the last step
    assert trace_kernels.host_waits(trace) == [
        {"step": "ProfilerStep#8", "step_us": 1000.0, "waited_us": 350.0, "calls": 2},
        {"step": "ProfilerStep#9", "step_us": 500.0, "waited_us": 0, "calls": 0}]


def test_trace_kernels_sums_each_class_per_profiled_step() -> None:
    trace_kernels = _load("trace_kernels")
    trace = {"traceEvents": [
        {"cat": "user_annotation", "name": "ProfilerStep#4", "ts": 0.0, "dur": 900.0},
        {"cat": "user_annotation", "name": "ProfilerStep#5", "ts": 900.0, "dur": 900.0},
        {"cat": "gpu_user_annotation", "name": "ProfilerStep#5", "ts": 900.0, "dur": 900.0},
        {"cat": "kernel", "name": "nvjet_sm90_tst_128x256", "ts": 0.0, "dur": 100.0},
        {"cat": "kernel", "name": "cutlass_s16816dgrad_analytic", "ts": 200.0, "dur": 80.0},
        {"cat": "kernel", "name": "cutlass_s16816dgrad_analytic", "ts": 220.0, "dur": 80.0},
        {"cat": "kernel", "name": "triton_poi_fused_add", "ts": 400.0, "dur": 10.0},
        {"cat": "kernel", "name": "some_memset_like_kernel", "ts": 500.0, "dur": 5.0}]}
    assert trace_kernels.profiled_steps(trace) == 2  # the GPU-side annotation is no second step
    assert trace_kernels.class_summary(trace) == {
        "GEMMs": {"calls": 1, "total_us": 100.0, "busy_us": 100.0},
        "positional conv (cuDNN)": {"calls": 2, "total_us": 160.0, "busy_us": 100.0},
        "inductor's fused kernels": {"calls": 1, "total_us": 10.0, "busy_us": 10.0},
        "other": {"calls": 1, "total_us": 5.0, "busy_us": 5.0}}


def run_bench(script: str, out: Path, *args: str) -> dict:
    """bench/`script` run with `args` and `--out out`: the JSON it saved."""
    run = subprocess.run([sys.executable, str(REPO / "bench" / script), *args, "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(out.read_text())


def test_checkpoint_gil_bench_times_four_writes_against_the_loop_alone(tmp_path: Path) -> None:
    result = run_bench("checkpoint_gil.py", tmp_path / "gil.json", "--gib", "0.02",
                       "--dir", str(tmp_path))
    assert result["device"] == "cpu" and result["tensors"] == 5
    assert list(result["rows"]) == ["torch.save(path)", "torch.save(BytesIO)", "file.write(buffer)",
                                    "writer process"]
    for row in result["rows"].values():
        # the share as the bench rounds it, from the two rates the JSON holds (a tolerance of half
        # the last place fails on a tie: 9.6875 rounds to 9.688, 5.000000000006e-4 away)
        assert row["write_s"] > 0 and row["loop_share"] == round(
            row["loop_it_per_s"] / result["loop_alone_it_per_s"], 3)
    assert result["rows"]["writer process"]["file_equals_state"] is True
    assert not (tmp_path / "checkpoint_gil_probe.pth").exists()  # cleaned up


def test_checkpoint_fs_bench_times_file_work_beside_each_way_of_writing(tmp_path: Path) -> None:
    out = tmp_path / "fs.json"
    result = run_bench("checkpoint_fs.py", out, "--gib", "0.02", "--dir", str(tmp_path))
    assert list(result["rows"]) == ["save, rename (before round 23)", "save, fsync, rename",
                                    "old file released piecewise"]
    for row in result["rows"].values():
        assert row["write_s"] > 0 and row["file_rounds"] >= 1
        assert 0 < row["p99_ms"] <= row["longest_ms"]
    assert list(tmp_path.iterdir()) == [out]  # its working dir and files removed


def test_loader_exit_bench_leaves_workers_alive_only_in_its_first_row(tmp_path: Path) -> None:
    result = run_bench("loader_exit.py", tmp_path / "exit.json", "--workers", "1",
                       "--factories", "1")
    untimed = {way: {k: v for k, v in row.items() if k != "exit_s"}
               for way, row in result["rows"].items()}
    assert untimed == {
        "workers left alive (before round 24)": {"pinned": "emulated", "workers_alive_at_exit": 1},
        "factories closed first (stage 4 now)": {"pinned": "emulated", "workers_alive_at_exit": 0}}
    assert all(row["exit_s"] > 0 for row in result["rows"].values())


def test_writer_process_check_passes_on_the_cpu(tmp_path: Path) -> None:
    assert run_bench("writer_process_gpu.py", tmp_path / "check.json", "--device", "cpu") == {
        "device": "cpu", "epochs": 4, "child_exit_code": 0, "checkpoint_epoch": 4,
        "checkpoint_equal": True, "epoch_files": ["3epoch.pth", "4epoch.pth"],
        "last_epoch_file_equal": True, "ipc_warning_at_exit": False}


def test_compile_pays_start_up_and_steady_epochs_from_a_log(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from compile_pays import phases

    log = tmp_path / "train.log"
    stamps = ["01:00:10,000", "01:00:12,000", "01:00:13,000", "01:00:14,000", "01:00:15,000"]
    log.write_text("".join(
        f"[vm] 2026-11-30 {stamp} (trainer:394) INFO: {i}epoch results: [train] loss_ctc=1.0, "
        f"time={'8 seconds' if i == 1 else '1 second'}, total_count=3, [valid] loss_ctc=1.0, "
        f"time={'2 seconds' if i == 1 else '0 seconds'}, total_count=1\n"
        for i, stamp in enumerate(stamps, 1)), encoding="utf-8")
    # epoch walls 10 (8 + 2), 2, 1, 1, 1: the first 2 cost 12 - 2 x 1 = 10 s over steady ones
    assert phases(log, 2) == (pytest.approx(10.0), pytest.approx(1.0))


def test_inductor_fallbacks_counts_aten_calls_not_the_quoted_graph() -> None:
    fallbacks = _load("inductor_fallbacks")
    code = ["\n".join([
        "    # %sum_13 : call_function[target=torch.ops.aten.sum.dim_IntList](args = (%mul_27, [0, 1]))",
        "    extern_kernels.mm(buf1, reinterpret_tensor(primals_2, (1024, 1024)), out=buf2)",
        "    buf3 = torch.ops.aten.sum.dim_IntList(buf2, [0])",
        "    extern_kernels.mm(buf4, buf5, out=buf6)",
    ]), "    aten._scaled_dot_product_cudnn_attention.default(q, k, v)"]
    assert fallbacks.calls(code) == {"extern_kernels.mm": 2, "aten.sum.dim_IntList": 1,
                                     "aten._scaled_dot_product_cudnn_attention.default": 1}
    assert fallbacks.sum_sites(code) == [
        "extern_kernels.mm(buf1, reinterpret_tensor(primals_2, (1024, 1024)), out=buf2)\n"
        "    buf3 = torch.ops.aten.sum.dim_IntList(buf2, [0])"]


def test_inductor_fallbacks_finds_the_mix_order_reductions_final_sums() -> None:
    """The wrapper line inductor (torch 2.11) writes after a mix-order reduction kernel, in its
    static and symbolic forms; a torch sum of another shape is not one."""
    fallbacks = _load("inductor_fallbacks")
    code = ["\n".join([
        "    # Call mix order reduction kernel",
        "    triton_per_fused_native_layer_norm_backward_3.run(buf9, buf10, ws, 11424, 1024)",
        "    buf11 = ws[0 * 714 * 1024 : (0 + 1) * 714 * 1024].view(714, 1024).sum(dim=0)",
        "    buf12 = ws[1 * ((15 + s27*s53) // 16) * 1024 : (1 + 1) * ((15 + s27*s53) // 16) "
        "* 1024].view((15 + s27*s53) // 16, 1024).sum(dim=0).to(torch.bfloat16)",
        "    buf13 = buf2.sum(dim=0)",
    ])]
    assert [line.split(" =")[0] for line in fallbacks.final_reduces(code)] == ["buf11", "buf12"]
    assert fallbacks.calls(code) == {}


def test_fastest_layer_variant_gives_the_winners_inductor_options_as_step_options() -> None:
    pick = _load("fastest_layer_variant").fastest_options
    rows = {"seed_dropouts": {"gpu_ms": 2.40, "inductor": {}},
            "seed_dropouts_mix_order_split64": {
                "gpu_ms": 2.31, "inductor": {"triton.mix_order_reduction_split_size": 64}},
            "seed_dropouts_no_mix_order": {
                "gpu_ms": 2.35, "inductor": {"triton.mix_order_reduction": False}},
            "seed_dropouts_pdl": {"error": "RuntimeError: ...", "inductor": {"triton.enable_pdl": True}}}
    names = list(rows)
    assert pick(rows, names) == "--compile_options triton.mix_order_reduction_split_size=64"
    rows["seed_dropouts_mix_order_split64"]["gpu_ms"] = 2.5
    assert pick(rows, names) == "--compile_options triton.mix_order_reduction=false"
    assert pick(rows, ["seed_dropouts", "seed_dropouts_mix_order_split64"]) == ""  # the baseline
    assert pick(rows, ["seed_dropouts_pdl"]) == ""


def test_compile_cache_saved_after_each_row_restores_every_rows_graphs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench saves torch.compile's caches after every row; torch's own loader gives back only
    the last save's artifacts of each type (the earlier rows' graphs compile cold again),
    load_compile_cache all of them. Two tiny graphs on the CPU, the caches in fresh dirs."""
    import torch
    from torch._dynamo.utils import counters

    bench = _load("train_throughput")

    def first(x):
        return (x.sin() * 2).sum()

    def second(x):
        return (x.cos() + 3).mean()

    def compile_and_run(fn) -> str:
        """'hit' or 'miss' in AOTAutograd's cache for fn's training graph."""
        torch._dynamo.reset()
        counters.clear()
        torch.compile(fn)(torch.ones(8, requires_grad=True)).backward()
        hits = counters["aot_autograd"]["autograd_cache_hit"]
        misses = counters["aot_autograd"]["autograd_cache_miss"]
        assert hits + misses == 1, dict(counters["aot_autograd"])
        return "hit" if hits else "miss"

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "compiling"))
    monkeypatch.setattr(torch._inductor.config, "fx_graph_cache", True)
    monkeypatch.setattr(torch._functorch.config, "enable_autograd_cache", True)
    saved = tmp_path / "cache.xz"
    compile_and_run(first)
    bench.save_compile_cache(saved)  # after row 1
    compile_and_run(second)
    bench.save_compile_cache(saved)  # after row 2: the file the next machine gets
    blob = bench.lzma.decompress(saved.read_bytes())

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "torchs_loader"))
    torch.compiler.load_cache_artifacts(blob)
    assert [compile_and_run(first), compile_and_run(second)] == ["miss", "hit"], \
        "torch's loader restores every save now: load_compile_cache may go"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "ours"))
    bench.load_compile_cache(blob)
    assert [compile_and_run(first), compile_and_run(second)] == ["hit", "hit"]
