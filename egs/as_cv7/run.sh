#!/usr/bin/env bash
# Common Voice 7.0 Assamese: XLS-R 300M (wav2vec 2.0, through s3prl) + CTC, trained with espnet2.
#
#   ./run.sh --demo true                                   # the embedded synthetic corpus, CPU
#   ./run.sh --cv_tarball cv-corpus-7.0-2021-07-21-as.tar.gz --ngpu 1
#   ./run.sh --cv_root /data/cv-corpus-7.0-2021-07-21/as --stage 1 --stop-stage 2
#
# Each stage records its completion (and the inputs it ran with) under $work_dir/exp/stage_records;
# a re-run skips finished stages whose inputs are unchanged. Logs: $work_dir/exp/logs/.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# ---- options (defaults) ----------------------------------------------------------------------
stage=0                 # first stage to run
stop_stage=5            # last stage to run
work_dir=${recipe_dir}  # where data/, dump/, exp/ and RESULTS.md go
cv_root=                # extracted release for one language (clips/, train.tsv, ...)
cv_tarball=             # or the release tarball, unpacked in stage 0
lang=as                 # Common Voice language code
demo=false              # true: embedded synthetic corpus + tiny model, runs on CPU
demo_size=full          # full (860 clips) or small (46 clips, for quick checks)
upstream_ckpt=          # local XLS-R checkpoint (s3prl or fairseq format); unset: s3prl downloads
train_config=           # default: conf/train_xlsr300m_ctc.yaml (conf/train_demo_ctc.yaml with --demo)
decode_config=          # default: conf/decode_ctc.yaml
ngpu=1                  # GPUs for training (0: CPU)
nj=$(nproc 2>/dev/null || echo 2)  # parallel jobs for CPU stages and decoding
train_set=train         # train: CV's train.tsv; validated: validated minus dev and test clips
exclude_eval_speakers=false  # with --train_set validated: also drop dev/test speakers' clips
max_drop=0.05           # share of a split that stages 1-2 may drop for bad input before failing
min_duration=0.1        # stage 2 keeps train/dev clips of min..max seconds (test: all)
max_duration=20
token_type=char         # char (the seed's choice) or bpe (sentencepiece unigram)
nbpe=150                # sentencepiece vocabulary size for --token_type bpe
train_args=             # extra espnet2 training options, e.g. "--max_epoch 20"

options=(stage stop_stage work_dir cv_root cv_tarball lang demo demo_size upstream_ckpt train_config
         decode_config ngpu nj train_set exclude_eval_speakers max_drop min_duration max_duration
         token_type nbpe train_args)
help_message="Usage: $0 [--name value ...]   (--stop-stage and --stop_stage are the same)
  --stage N --stop-stage M   run stages N..M of
       0 corpus and upstream in place   1 Common Voice to Kaldi data dirs   2 audio dump
       3 token list and shape stats     4 training (espnet2)                5 decoding and scoring
  --work_dir DIR       outputs: data/ dump/ exp/ RESULTS.md (default: ${recipe_dir})
  --cv_root DIR        extracted Common Voice release folder (clips/, train.tsv, ...)
  --cv_tarball FILE    the release tarball instead, unpacked in stage 0
  --lang CODE          language code (default: ${lang})
  --demo true          embedded synthetic Assamese corpus and tiny model, on CPU
  --demo_size full|small   size of that corpus (default ${demo_size})
  --upstream_ckpt PATH local wav2vec 2.0 / XLS-R checkpoint; unset: s3prl downloads xls_r_300m
  --train_config FILE  --decode_config FILE   YAML (defaults in conf/)
  --ngpu N             GPUs for training (default ${ngpu})   --nj N  parallel CPU jobs (default ${nj})
  --train_set train|validated   CV's train.tsv (default) or validated minus dev/test
  --exclude_eval_speakers true  with validated: also drop clips of dev/test speakers
  --max_drop F         share of a split stages 1-2 may drop for bad input (default ${max_drop})
  --min_duration S --max_duration S   train/dev length filter of stage 2 (default ${min_duration}-${max_duration})
  --token_type char|bpe --nbpe N   token unit of stage 3 (default ${token_type})
  --train_args \"ARGS\"  extra espnet2 training options, e.g. \"--max_epoch 20\""

. "${recipe_dir}/utils/parse_options.sh"

die() { echo "$0: $*" >&2; exit 2; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

is_uint "$stage" && (( stage <= 5 )) || die "--stage must be 0..5, got '$stage'"
is_uint "$stop_stage" && (( stop_stage <= 5 )) || die "--stop-stage must be 0..5, got '$stop_stage'"
(( stage <= stop_stage )) || die "--stage ($stage) is after --stop-stage ($stop_stage)"
[[ $demo == true || $demo == false ]] || die "--demo must be true or false, got '$demo'"
[[ $demo_size == full || $demo_size == small ]] || die "--demo_size must be full or small, got '$demo_size'"
[[ $train_set == train || $train_set == validated ]] || die "--train_set must be train or validated, got '$train_set'"
is_uint "$ngpu" || die "--ngpu must be a whole number, got '$ngpu'"
is_uint "$nj" && (( nj >= 1 )) || die "--nj must be at least 1, got '$nj'"
[[ $exclude_eval_speakers == true || $exclude_eval_speakers == false ]] || die "--exclude_eval_speakers must be true or false, got '$exclude_eval_speakers'"
[[ $max_drop =~ ^(0(\.[0-9]+)?|1(\.0+)?|\.[0-9]+)$ ]] || die "--max_drop must be a number in [0, 1], got '$max_drop'"
[[ $min_duration =~ ^[0-9]*\.?[0-9]+$ ]] || die "--min_duration must be a number of seconds, got '$min_duration'"
[[ $max_duration =~ ^[0-9]*\.?[0-9]+$ ]] || die "--max_duration must be a number of seconds, got '$max_duration'"
[[ $token_type == char || $token_type == bpe ]] || die "--token_type must be char or bpe, got '$token_type'"
is_uint "$nbpe" && (( nbpe >= 2 )) || die "--nbpe must be a whole number >= 2, got '$nbpe'"
[[ $lang =~ ^[A-Za-z]{2,3}(-[A-Za-z0-9]+)?$ ]] || die "--lang must be a Common Voice language code, got '$lang'"
if [ "$demo" = true ] && [ -n "${cv_root}${cv_tarball}" ]; then
    die "--demo true makes its own corpus: drop --cv_root/--cv_tarball, or drop --demo"
fi
if [ -n "$cv_root" ] && [ -n "$cv_tarball" ]; then
    die "give either --cv_root or --cv_tarball, not both"
fi
if [ "$demo" = true ]; then
    : "${train_config:=${recipe_dir}/conf/train_demo_ctc.yaml}"
    ngpu=0
else
    : "${train_config:=${recipe_dir}/conf/train_xlsr300m_ctc.yaml}"
fi
: "${decode_config:=${recipe_dir}/conf/decode_ctc.yaml}"

. "${recipe_dir}/path.sh"

mkdir -p "$work_dir"
work_dir=$(cd "$work_dir" && pwd)
exp_dir=${work_dir}/exp
log_dir=${exp_dir}/logs
records_dir=${exp_dir}/stage_records
stage0_dir=${exp_dir}/stage0
mkdir -p "$log_dir" "$records_dir"

log() {
    local line
    line="$(date '+%Y-%m-%d %H:%M:%S') (run.sh) $*"
    echo "$line"
    echo "$line" >> "${log_dir}/run.log"
}

stage_names=(corpus_and_upstream data_prep dump tokens_and_stats train decode_and_score)

# run_stage N SIGNATURE FUNCTION: run FUNCTION as stage N unless its record holds SIGNATURE.
run_stage() {
    local n=$1 signature=$2 fn=$3
    local name=${stage_names[$n]}
    (( n >= stage && n <= stop_stage )) || return 0
    local record=${records_dir}/stage${n}.done
    local stage_log=${log_dir}/stage${n}_${name}.log
    if [ -f "$record" ] && [ "$(cat "$record")" = "$signature" ]; then
        log "stage $n ($name): already done with these inputs, skipping (delete $record to force)"
        return 0
    fi
    [ -f "$record" ] && log "stage $n ($name): inputs changed since it last ran, running it again"
    rm -f "$record"
    log "stage $n ($name): start (log: $stage_log)"
    local status
    set +e
    ( set -e; "$fn" ) 2>&1 | tee -a "$stage_log"
    status=${PIPESTATUS[0]}
    set -e
    if (( status != 0 )); then
        log "stage $n ($name): FAILED (exit $status); see $stage_log"
        exit 1
    fi
    printf '%s\n' "$signature" > "${record}.tmp"
    mv "${record}.tmp" "$record"
    log "stage $n ($name): done"
}

# ---- stage 0: corpus and pretrained upstream in place ----------------------------------------
stage0() {
    local release upstream
    mkdir -p "$stage0_dir" "${work_dir}/downloads"
    if [ "$demo" = true ]; then
        release=${work_dir}/downloads/demo_cv7_${lang}_${demo_size}
        cvasr demo-corpus --out "$release" --size "$demo_size" --seed 0 --nj "$nj"
    elif [ -n "$cv_tarball" ]; then
        release=$(cvasr extract-release --tarball "$cv_tarball" --out "${work_dir}/downloads" --lang "$lang")
    elif [ -n "$cv_root" ]; then
        release=$(cd "$cv_root" 2>/dev/null && pwd) || {
            echo "Common Voice release folder '$cv_root' does not exist" >&2
            cvasr check-release "$cv_root"; return 1; }
    else
        echo "stage 0 needs a corpus: --cv_root DIR, --cv_tarball FILE or --demo true" >&2
        cvasr check-release "${work_dir}/downloads/no-release-given" || true
        return 1
    fi
    cvasr check-release "$release" --lang "$lang" --version 7.0
    printf '%s\n' "$release" > "${stage0_dir}/release_dir"

    if [ -n "$upstream_ckpt" ]; then
        cvasr check-upstream "$upstream_ckpt"
        upstream=$(cd "$(dirname "$upstream_ckpt")" && pwd)/$(basename "$upstream_ckpt")
    elif [ "$demo" = true ]; then
        upstream=${work_dir}/downloads/upstream/wav2vec2_tiny_random.pt
        [ -f "$upstream" ] || cvasr make-upstream --arch tiny --out "$upstream"
        cvasr check-upstream "$upstream"
    else
        cvasr fetch-upstream --name xls_r_300m --download-dir "${work_dir}/downloads/s3prl"
        upstream=s3prl:xls_r_300m
    fi
    printf '%s\n' "$upstream" > "${stage0_dir}/upstream"
    echo "release: $release"
    echo "upstream: $upstream"
}

# ---- stage 1: Common Voice release to Kaldi data dirs ------------------------------------------
release_dir() {
    [ -f "${stage0_dir}/release_dir" ] || { echo "no release recorded: run stage 0 first" >&2; return 1; }
    cat "${stage0_dir}/release_dir"
}

stage1() {
    local extra=()
    [ "$exclude_eval_speakers" = true ] && extra+=(--exclude-eval-speakers)
    cvasr prepare-data --release "$(release_dir)" --data-dir "${work_dir}/data" --lang "$lang" \
        --train-set "$train_set" --max-drop "$max_drop" --nj "$nj" "${extra[@]}"
}

# ---- stage 2: audio dump (16 kHz FLAC) and length filtering -------------------------------------
stage2() {
    cvasr dump --data-dir "${work_dir}/data" --dump-dir "${work_dir}/dump" \
        --min-duration "$min_duration" --max-duration "$max_duration" --max-drop "$max_drop" --nj "$nj"
}

# ---- stage 3: token list and shape statistics --------------------------------------------------
token_dir=${work_dir}/data/token_list/${token_type}
stats_dir=${exp_dir}/asr_stats_${token_type}
upstream_spec() {
    [ -f "${stage0_dir}/upstream" ] || { echo "no upstream recorded: run stage 0 first" >&2; return 1; }
    cat "${stage0_dir}/upstream"
}

stage3() {
    local extra=()
    [ "$token_type" = bpe ] && extra+=(--nbpe "$nbpe")
    cvasr make-tokens --text "${work_dir}/dump/train/text" --out "$token_dir" \
        --token-type "$token_type" "${extra[@]}"
    cvasr collect-stats --dump-dir "${work_dir}/dump" --token-list "${token_dir}/tokens.txt" \
        --config "$train_config" --upstream "$(upstream_spec)" \
        --download-dir "${work_dir}/downloads/s3prl" --out "$stats_dir"
}

# ---- stage 4: training (espnet2; resumes from the experiment's checkpoint) ----------------------
asr_exp=${exp_dir}/asr_$(basename "${train_config%.*}")_${token_type}

stage4() {
    local extra=() words=()
    # Split on whitespace only: never evaluated, never globbed.
    read -r -a words <<< "$train_args"
    [ ${#words[@]} -gt 0 ] && extra=(-- "${words[@]}")
    cvasr train --dump-dir "${work_dir}/dump" --token-list "${token_dir}/tokens.txt" \
        --config "$train_config" --upstream "$(upstream_spec)" \
        --download-dir "${work_dir}/downloads/s3prl" --stats-dir "$stats_dir" \
        --exp-dir "$asr_exp" --ngpu "$ngpu" "${extra[@]}"
}

# ---- stage 5: decoding dev and test, scoring, RESULTS.md ----------------------------------------
stage5() {
    local device=cpu split dirs=() tag
    (( ngpu > 0 )) && device=cuda
    tag=$(basename "${decode_config%.*}")
    for split in dev test; do
        local out=${asr_exp}/${tag}/${split}
        cvasr decode --model "$asr_exp" --config "$decode_config" --data-dir "${work_dir}/dump/${split}" \
            --out "$out" --device "$device" --nj "$nj"
        for unit in word char; do
            local name=wer
            [ "$unit" = char ] && name=cer
            cvasr score --ref "${work_dir}/dump/${split}/text" --hyp "${out}/text" \
                --utt2spk "${work_dir}/dump/${split}/utt2spk" --unit "$unit" --lang "$lang" \
                --out "${out}/score_${name}"
        done
        dirs+=("$out")
    done
    cvasr results --exp "$asr_exp" --decode-dirs "${dirs[@]}" --device "$device" \
        --decode-config "$decode_config" --out "${work_dir}/RESULTS.md"
}

file_digest() { if [ -f "$1" ]; then sha1sum < "$1" | cut -c1-12; else echo none; fi; }

run_stage 0 "demo=${demo} demo_size=${demo_size} lang=${lang} cv_root=${cv_root} cv_tarball=${cv_tarball} upstream_ckpt=${upstream_ckpt}" stage0
run_stage 1 "release=$(release_dir 2>/dev/null || true) lang=${lang} train_set=${train_set} exclude_eval_speakers=${exclude_eval_speakers} max_drop=${max_drop}" stage1
run_stage 2 "data=$(cat "${records_dir}/stage1.done" 2>/dev/null || true) min=${min_duration} max=${max_duration} max_drop=${max_drop}" stage2
run_stage 3 "dump=$(cat "${records_dir}/stage2.done" 2>/dev/null || true) token_type=${token_type} nbpe=${nbpe} config=$(file_digest "$train_config") upstream=$(upstream_spec 2>/dev/null || true)" stage3
run_stage 4 "stats=$(cat "${records_dir}/stage3.done" 2>/dev/null || true) config=$(file_digest "$train_config") ngpu=${ngpu} train_args=${train_args}" stage4
run_stage 5 "train=$(cat "${records_dir}/stage4.done" 2>/dev/null || true) decode=$(file_digest "$decode_config") lang=${lang}" stage5

if (( stop_stage < 5 )); then
    next=$((stop_stage + 1))
    log "stages ${stage}-${stop_stage} finished; next: stage ${next} (${stage_names[$next]}):" \
        "run again with --stage ${next} --stop-stage 5"
    log "stages that follow: $(for n in $(seq "$next" 5); do printf '%s ' "${n}:${stage_names[$n]}"; done)"
else
    log "all stages finished"
fi
