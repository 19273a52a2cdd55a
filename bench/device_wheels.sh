#!/usr/bin/env bash
# The wheels a GPU machine of the device tool needs to run the recipe: its image has Python 3.12,
# torch 2.11, torchaudio, numpy, transformers, accelerate, sentencepiece, matplotlib, tensorboard
# and more (../.library/device/KINDS.md lists them), but not espnet and its other dependencies.
# Downloads them, pinned by requirements/constraints.txt, into .whl/ (git-ignored; carry it).
# On the machine: python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site
# .whl/*.whl && export PYTHONPATH=/tmp/site (bench scripts' docstrings give the whole command).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
binary=(annotated-types asteroid-filterbanks audioread cffi ConfigArgParse decorator defusedxml
        editdistance espnet-g2p-en espnet-s3prl espnet_tts_frontend espnet humanfriendly
        hydra-core importlib-metadata inflect jaconv jamo jaraco.functools jiwer kaldiio librosa
        more-itertools nltk omegaconf platformdirs pooch pycparser pydantic_core pydantic
        pypinyin RapidFuzz soundfile soxr torch-complex torchao typeguard typing-inspection tzdata
        Unidecode)
source_only=(antlr4-python3-runtime ci_sdr Distance fast_bss_eval)  # pure Python: built here
pin() { grep -i -E "^$(printf '%s' "$1" | sed 's/[-_.]/[-_.]/g')==" requirements/constraints.txt; }
platforms=()
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
         manylinux_2_28_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
for name in "${binary[@]}"; do
    .venv/bin/pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp "${platforms[@]}" -d .whl "$(pin "$name")"
done
for name in "${source_only[@]}"; do
    .venv/bin/pip wheel -q --disable-pip-version-check --no-deps -w .whl "$(pin "$name")"
done
du -sh .whl
