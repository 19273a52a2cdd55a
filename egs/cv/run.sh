#!/usr/bin/env bash
# Common Voice, any language: XLS-R 300M (wav2vec 2.0, through s3prl) + CTC, trained with espnet2.
#
#   ./run.sh --lang bn --cv_tarball cv-corpus-17.0-2024-03-15-bn.tar.gz --ngpu 1
#   ./run.sh --lang cy --cv_root /data/cv-corpus-17.0-2024-03-15/cy --ngpu 1
#
# The same stages (asr.sh), Common Voice part (local/data.sh, shared with egs/as_cv7) and XLS-R
# config as the Assamese recipe; the language comes from --lang, which picks the text normaliser
# (a language's own rules where the package has them, else the generic one) and is required.
# ./run.sh --help lists every option.
set -euo pipefail
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CVASR_ENTRY=$0
exec "${recipe_dir}/asr.sh" "$@"
