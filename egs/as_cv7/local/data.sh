#!/usr/bin/env bash
# Common Voice, one language of one release: the corpus-specific part of the recipe.
#   stage 0: the release in place (the embedded demo corpus synthesised, a tarball unpacked, or an
#            extracted folder), checked: files, headers, counts, missing audio
#   stage 1: Kaldi data dirs data/{train,dev,test} with normalised text, and data/prep_report.json
# asr.sh calls it for its stages 0 and 1 (as ESPnet's asr.sh calls local/data.sh) and hands it
# every option it does not know itself; a recipe for another corpus replaces this file and keeps
# asr.sh. On its own: local/data.sh --cv_root DIR --lang bn --work_dir DIR --stage 0 --stop_stage 1
set -euo pipefail

local_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
recipe_dir=$(dirname "$local_dir")
prog=${CVASR_ENTRY:-$0}

stage=0                 # 0: the release in place; 1: data dirs
stop_stage=1
work_dir=${recipe_dir}  # data/ and downloads/ go here
lang=                   # Common Voice language code
nj=2                    # parallel jobs
max_drop=               # see asr.sh (default: cvasr's)
demo=false              # true: synthesise the embedded Assamese demo corpus (espeak-ng)
demo_size=full          # full (860 clips) or small (46 clips, for quick checks)
cv_root=                # extracted release for one language (clips/, train.tsv, ...)
cv_tarball=             # or the release tarball, unpacked in stage 0
train_set=train         # train: CV's train.tsv; validated: validated minus dev and test clips
exclude_eval_speakers=false  # with --train_set validated: also drop dev/test speakers' clips
validate_only=false     # check the options and stop (asr.sh does this before any stage)

options=(stage stop_stage work_dir lang nj max_drop demo demo_size cv_root cv_tarball train_set
         exclude_eval_speakers validate_only)
help_message="Usage: $prog [--name value ...]   (the Common Voice part of the recipe; asr.sh calls it)
  --stage N --stop_stage M   0 the release in place, 1 Kaldi data dirs (default 0-1)
  --work_dir DIR --lang CODE --nj N --max_drop F --demo true|false   as in asr.sh
Corpus options (local/data.sh, Common Voice):
  --cv_root DIR        extracted Common Voice release folder (clips/, train.tsv, ...), any
                       release from 5.1 on: cv-corpus-<version>-<date>/<lang>
  --cv_tarball FILE    the release tarball instead, unpacked in stage 0
  --demo_size full|small   size of the embedded demo corpus (--demo true; Assamese only)
  --train_set train|validated   CV's train.tsv (default) or validated minus dev/test
  --exclude_eval_speakers true  with validated: also drop clips of dev/test speakers"

. "${recipe_dir}/utils/parse_options.sh"

die() { echo "$prog: $*" >&2; exit 2; }
[[ $demo == true || $demo == false ]] || die "--demo must be true or false, got '$demo'"
[[ $demo_size == full || $demo_size == small ]] || die "--demo_size must be full or small, got '$demo_size'"
[[ $train_set == train || $train_set == validated ]] || die "--train_set must be train or validated, got '$train_set'"
[[ $exclude_eval_speakers == true || $exclude_eval_speakers == false ]] || die "--exclude_eval_speakers must be true or false, got '$exclude_eval_speakers'"
[ -n "$lang" ] || die "--lang is required"
if [ "$demo" = true ] && [ -n "${cv_root}${cv_tarball}" ]; then
    die "--demo true makes its own corpus: drop --cv_root/--cv_tarball, or drop --demo"
fi
if [ "$demo" = true ] && [ "$lang" != as ]; then
    die "the embedded demo corpus is Assamese (--lang as); for --lang $lang pass a Common Voice release with --cv_root or --cv_tarball"
fi
if [ -n "$cv_root" ] && [ -n "$cv_tarball" ]; then
    die "give either --cv_root or --cv_tarball, not both"
fi
[ "$validate_only" = true ] && exit 0

. "${recipe_dir}/path.sh"
. "${recipe_dir}/utils/console.sh"
release_record=${work_dir}/data/local/release_dir

if (( stage <= 0 && 0 <= stop_stage )); then
    mkdir -p "${work_dir}/downloads" "${work_dir}/data/local"
    if [ "$demo" = true ]; then
        release=${work_dir}/downloads/demo_cv7_${lang}_${demo_size}
        cvasr demo-corpus --out "$release" --size "$demo_size" --seed 0 --nj "$nj"
    elif [ -n "$cv_tarball" ]; then
        release=$(cvasr extract-release --tarball "$cv_tarball" --out "${work_dir}/downloads" --lang "$lang")
    elif [ -n "$cv_root" ]; then
        release=$(cd "$cv_root" 2>/dev/null && pwd) || {
            say_error "Common Voice release folder '$cv_root' does not exist"
            cvasr check-release "$cv_root" --lang "$lang"; exit 1; }
    else
        say_error "stage 0 needs a corpus: --cv_root DIR, --cv_tarball FILE or --demo true"
        cvasr check-release "${work_dir}/downloads/no-release-given" --lang "$lang" || true
        exit 1
    fi
    cvasr check-release "$release" --lang "$lang"
    printf '%s\n' "$release" > "$release_record"
    echo "release: $release"
fi

if (( stage <= 1 && 1 <= stop_stage )); then
    [ -f "$release_record" ] || { say_error "no release recorded in $release_record: run stage 0 first"; exit 1; }
    extra=()
    [ "$exclude_eval_speakers" = true ] && extra+=(--exclude-eval-speakers)
    max_drop_opt=()
    [ -n "$max_drop" ] && max_drop_opt=(--max-drop "$max_drop")
    cvasr prepare-data --release "$(cat "$release_record")" --data-dir "${work_dir}/data" \
        --lang "$lang" --train-set "$train_set" "${max_drop_opt[@]}" --nj "$nj" "${extra[@]}"
fi
