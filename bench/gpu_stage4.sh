#!/usr/bin/env bash
# Stage 4's GPU benchmarks (issue 17) on a machine of the device tool, one job a call:
#   e2e      bench/train_e2e.py: stage 4 through run.sh for 50 epochs with the committed config
#            (then RESUME_EPOCHS more, resumed: a warm compile cache), and the seed's stack for
#            SEED_EPOCHS (25) epochs
#   e2e2     the same on a machine of 2 GPUs, two runs at once: GPU 0 stage 4 as committed
#            (then resumed), GPU 1 stage 4 with the transformer not compiled, then the seed's
#            stack; merged into one train_e2e.json (the same clips, machine and revision;
#            the two runs slow each other: their figures compare with each other only)
#   step     bench/step_kernels.py (CTC and the positional conv alone; STEP_KERNELS=0 skips it), then
#            bench/train_throughput.py: the committed config's step (row 13: compiled, CUDA
#            graphs, no host sync, the seed's fine-tuning dropouts, bf16 weight copies) against
#            row 12 (the same without the copies), same run, loss per row; STEP_TRY adds
#            a row of those options over the committed config (STEP_TRY_NAME names it)
#   scaling  bench/train_gpu.py: 1 and 2 GPUs, 32 clips a GPU, on a 10-hour synthetic corpus,
#            SCALING_OPTIONS (espnet2 options) over the committed config; the 2 GPUs started
#            by each of SCALING_LAUNCHERS (espnet2's launcher, torchrun, torchrun as 2 nodes);
#            "--profile_epoch 2" in SCALING_OPTIONS brings each process's profile back too
#            (op tables in train_logs.tgz, Chrome traces in profile_traces.tar)
#            (after OUT_DIR, `--try "bf16_hook=--ddp_comm_hook bf16_compress_hook"` adds a 2-GPU
#            run with those options, by espnet2's launcher)
# Every output goes to OUT_DIR (the device tool's $OUT), with the GPUs' clocks sampled every
# second (gpu_clocks.csv) and their state, throttle reasons included, at the start and end
# (gpus.txt; the tool brings back 8 files a call). An e2e run whose two parts do not fit in one
# call's 10 minutes (a slow cold compile: round 23) can run as two calls on one machine kept
# warm, `e2e "$OUT" --only ours` then `WHEELS= ... e2e "$OUT" --only seed` (the seed's part
# runs stages 0-3 itself where the first call's are not there: the warm machine may be lost
# between two calls, round 24), merged by `bench/train_e2e.py --merge A.json B.json --out
# merged.json`.
# Needs the wheels of bench/device_wheels.sh in .whl/ (carry it) and CVASR_GIT_REV set to the
# revision run (the machine's copy of .git is not this checkout's).
#   bash bench/gpu_stage4.sh e2e "$OUT"
# Options after OUT_DIR go to the bench script, after its own (a CPU smoke run of the whole chain
# where the packages are installed and .whl/ is absent:
#   WHEELS= PATH=$PWD/.venv/bin:$PATH bash bench/gpu_stage4.sh e2e /tmp/out --device cpu
#   --arch tiny --clips 24 --epochs 3 --seed-epochs 2).
set -euo pipefail
job=$1
out=$2
shift 2
cd "$(dirname "$0")/.."
mkdir -p "$out"
wheels=${WHEELS-.whl}  # WHEELS= (empty): the packages are installed already
if [ -n "$wheels" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$wheels"/*.whl
fi
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1
# path.sh wants an environment dir with bin/cvasr: the image's own Python (itself a virtualenv,
# so a new virtualenv on top would not see its packages) behind small wrappers
# (made afresh: a wrapper written through an earlier virtualenv's python3 symlink would replace
# the image's interpreter itself)
py=$(command -v python3)
rm -rf /tmp/venv
mkdir -p /tmp/venv/bin
for name in python python3; do printf '#!/bin/sh\nexec %s "$@"\n' "$py" > /tmp/venv/bin/$name; done
printf '#!/bin/sh\nexec %s -m cvasr.cli "$@"\n' "$py" > /tmp/venv/bin/cvasr
chmod +x /tmp/venv/bin/*
export CVASR_PYTHON_ENV=/tmp/venv
nvidia-smi --query-gpu=name,memory.total --format=csv > "$out/gpus.txt" 2>&1 || true
# the GPUs' clocks, power, temperature and use every second while the job runs
# (gpu_clocks.csv), and their clock-event (throttle) reasons at its start and end
# (gpus.txt): machines of the same kind differ by 20% on one GPU and more on two
# (bench/NOTES.md, round 9), and this shows whether their clocks are why
if command -v nvidia-smi > /dev/null; then
    nvidia-smi -q -d PERFORMANCE,CLOCK >> "$out/gpus.txt" 2>&1 || true
    nvidia-smi --query-gpu=timestamp,index,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu \
        --format=csv -l 1 > "$out/gpu_clocks.csv" 2>&1 &
    sampler=$!
    trap 'kill "$sampler" 2> /dev/null || true; nvidia-smi -q -d PERFORMANCE,CLOCK >> "$out/gpus.txt" 2>&1 || true' EXIT
fi
nj=$(nproc)
status=0
started=$(mktemp /tmp/gpu_stage4_started.XXXXXX)  # files newer than this are this call's
case $job in
    e2e)
        work=/tmp/cvasr-e2e
        timeout "${E2E_TIMEOUT:-560}" python3 bench/train_e2e.py --epochs 50 \
            --seed-epochs "${SEED_EPOCHS:-25}" --resume-epochs "${RESUME_EPOCHS:-0}" \
            --only ours seed --nj "$nj" --work "$work" --out "$out/train_e2e.json" "$@" 2>&1 \
            | tee "$out/e2e_log.txt" || status=$?
        exp=$work/recipe/exp/asr_train_xlsr300m_ctc_char
        # this call's files only: on a machine kept warm from an earlier call (`--only seed`
        # after `--only ours`, round 23) the experiment of that call is still there
        for file in "$exp/train.log" "$exp"/stall_traces*.txt "$work/bench.log"; do
            [ -f "$file" ] && [ "$file" -nt "$started" ] || continue
            case $file in
                */bench.log) cp "$file" "$out/bench.log" ;;
                *) cp "$file" "$out/ours_$(basename "$file")" ;;  # ours_train.log, ours_stall_traces.txt
            esac
        done
        # in the console's file: the tool brings back 8 files a call
        if [ "$exp/compile_cache" -nt "$started" ]; then
            du -sh "$exp/compile_cache" >> "$out/e2e_log.txt" 2>/dev/null || true
        fi
        ;;
    e2e2)
        half=$(( nj / 2 ))
        CUDA_VISIBLE_DEVICES=0 timeout "${E2E_TIMEOUT:-540}" python3 bench/train_e2e.py \
            --epochs 50 --resume-epochs "${RESUME_EPOCHS:-3}" --only ours --nj "$half" \
            --work /tmp/cvasr-e2e-a --out "$out/e2e_compiled.json" "$@" \
            > /tmp/e2e_compiled_log.txt 2>&1 &
        compiled=$!
        CUDA_VISIBLE_DEVICES=1 timeout "${E2E_TIMEOUT:-540}" python3 bench/train_e2e.py \
            --epochs 50 --seed-epochs "${SEED_EPOCHS:-25}" --only ours seed --name ours_eager \
            --train-args "--compile_upstream false" --nj "$half" --work /tmp/cvasr-e2e-b \
            --out "$out/e2e_eager_seed.json" "$@" > /tmp/e2e_eager_seed_log.txt 2>&1 || status=$?
        wait "$compiled" || status=$?
        tail -n 3 /tmp/e2e_*_log.txt
        python3 bench/train_e2e.py --merge "$out/e2e_compiled.json" "$out/e2e_eager_seed.json" \
            --out "$out/train_e2e.json" 2>&1 | tee "$out/e2e_log.txt" || status=$?
        # the consoles and espnet2's logs in one archive: the device tool brings back 8 files a
        # call (the first e2e2 run lost the seed's console that way)
        logs=(e2e_compiled_log.txt e2e_eager_seed_log.txt)
        for log in /tmp/cvasr-e2e-{a,b}/bench.log /tmp/cvasr-e2e-{a,b}/recipe/exp/*/train.log; do
            [ -f "$log" ] && logs+=("${log#/tmp/}")
        done
        tar czf "$out/e2e_logs.tgz" -C /tmp "${logs[@]}" 2>/dev/null || true
        du -sh /tmp/cvasr-e2e-a/recipe/exp/*/compile_cache > "$out/compile_cache_size.txt" \
            2>/dev/null || true
        ;;
    step)
        if [ "${STEP_KERNELS:-1}" != 0 ]; then  # STEP_KERNELS=0: the step rows alone
            python3 bench/step_kernels.py --out "$out/step_kernels.json" 2>&1 \
                | grep -v Warning | tee "$out/step_kernels_log.txt" || status=$?
        fi
        try=${STEP_TRY:-}
        try_name=${STEP_TRY_NAME:-STEP_TRY}
        tries=()
        [ -n "$try" ] && tries=(--try "$try_name=$try")
        timeout "${STEP_TIMEOUT:-480}" python3 bench/train_throughput.py --only ours_12 ours_13 \
            "${tries[@]}" --epochs 5 --warmup-epochs 2 \
            --out "$out/train_throughput.json" "$@" 2>&1 \
            | tee "$out/train_throughput_log.txt" || status=$?
        ;;
    scaling)
        work=/tmp/cvasr-scaling
        timeout "${SCALING_TIMEOUT:-540}" python3 bench/train_gpu.py --synth-hours 10 \
            --batch-per-gpu 32 --gpus 1 2 --launchers ${SCALING_LAUNCHERS:-espnet2 torchrun torchrun_2nodes} \
            --epochs "${SCALING_EPOCHS:-3}" --nj "$nj" --work "$work" \
            --out "$out/train_gpu.json" "$@" -- ${SCALING_OPTIONS:-} 2>&1 \
            | tee "$out/scaling_log.txt" || status=$?
        # one archive: the device tool brings back a few files a call
        logs=()
        for log in "$work"/exp_*/train.log "$work"/exp_*/train.node1.log \
                "$work"/exp_*/profile/*.txt; do
            [ -f "$log" ] && logs+=("${log#"$work"/}")
        done
        [ ${#logs[@]} -gt 0 ] && tar czf "$out/train_logs.tgz" -C "$work" "${logs[@]}"
        # the profiles' Chrome traces (call stacks, the streams' timelines) apart: a file over
        # the tool's 16 MiB stays behind alone
        traces=()
        for trace in "$work"/exp_*/profile/*.trace.json.gz; do
            [ -f "$trace" ] && traces+=("${trace#"$work"/}")
        done
        [ ${#traces[@]} -gt 0 ] && tar cf "$out/profile_traces.tar" -C "$work" "${traces[@]}"
        true
        ;;
    *)
        echo "unknown job $job (e2e, e2e2, step or scaling)" >&2
        exit 2
        ;;
esac
rm -f "$started"
exit "$status"
