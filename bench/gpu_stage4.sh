#!/usr/bin/env bash
# Stage 4's GPU benchmarks (issue 17) on a machine of the device tool, one job a call:
#   e2e      bench/train_e2e.py: stage 4 through run.sh for 50 epochs with the committed config
#            (then RESUME_EPOCHS more, resumed: a warm compile cache), and the seed's stack for
#            SEED_EPOCHS (25) epochs
#   scaling  bench/train_gpu.py: 1 and 2 GPUs, 32 clips a GPU, on a 10-hour synthetic corpus,
#            SCALING_OPTIONS (espnet2 options) over the committed config
# Every output goes to OUT_DIR (the device tool's $OUT). Needs the wheels of
# bench/device_wheels.sh in .whl/ (carry it) and CVASR_GIT_REV set to the revision run (the
# machine's copy of .git is not this checkout's).
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
nj=$(nproc)
status=0
case $job in
    e2e)
        work=/tmp/cvasr-e2e
        timeout "${E2E_TIMEOUT:-520}" python3 bench/train_e2e.py --epochs 50 \
            --seed-epochs "${SEED_EPOCHS:-25}" --resume-epochs "${RESUME_EPOCHS:-0}" \
            --only ours seed --nj "$nj" --work "$work" --out "$out/train_e2e.json" "$@" 2>&1 \
            | tee "$out/e2e_log.txt" || status=$?
        exp=$work/recipe/exp/asr_train_xlsr300m_ctc_char
        cp "$exp/train.log" "$out/ours_train.log" 2>/dev/null || true
        cp "$work/bench.log" "$out/bench.log" 2>/dev/null || true
        du -sh "$exp/compile_cache" > "$out/compile_cache_size.txt" 2>/dev/null || true
        ;;
    scaling)
        work=/tmp/cvasr-scaling
        timeout "${SCALING_TIMEOUT:-540}" python3 bench/train_gpu.py --synth-hours 10 \
            --batch-per-gpu 32 --gpus 1 2 --epochs 3 --nj "$nj" --work "$work" \
            --out "$out/train_gpu.json" "$@" -- ${SCALING_OPTIONS:-} 2>&1 \
            | tee "$out/scaling_log.txt" || status=$?
        for n in 1 2; do
            cp "$work/exp_${n}gpu/train.log" "$out/exp_${n}gpu_train.log" 2>/dev/null || true
        done
        ;;
    *)
        echo "unknown job $job (e2e or scaling)" >&2
        exit 2
        ;;
esac
exit "$status"
