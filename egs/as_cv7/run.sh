#!/usr/bin/env bash
# Common Voice 7.0 Assamese: XLS-R 300M (wav2vec 2.0, through s3prl) + CTC, trained with espnet2.
#
#   ./run.sh --demo true                                   # the embedded synthetic corpus, CPU
#   ./run.sh --cv_tarball cv-corpus-7.0-2021-07-21-as.tar.gz --ngpu 1
#   ./run.sh --cv_root /data/cv-corpus-7.0-2021-07-21/as --stage 1 --stop-stage 2
#
# The stages are asr.sh's (shared by every recipe: ../TEMPLATE/asr.sh), the Common Voice part is
# local/data.sh, the configs are in conf/. ./run.sh --help lists every option.
set -euo pipefail
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CVASR_ENTRY=$0
exec "${recipe_dir}/asr.sh" --lang as "$@"
