#!/usr/bin/env bash
# The recipe's stages, shared by every recipe dir (egs/<recipe>/asr.sh links here, as ESPnet's
# egs2/*/asr1/asr.sh link to TEMPLATE/asr1/asr.sh). A recipe dir holds:
#   run.sh         its defaults (e.g. --lang as), then `exec asr.sh "$@"`
#   local/data.sh  the corpus-specific part: the corpus in place (stage 0) and the Kaldi data dirs
#                  data/{train,dev,test} (stage 1); options this script does not know go to it
#   conf/          training and decoding YAML
#   path.sh, utils/   links to TEMPLATE
#
# Each stage records its completion (and the inputs it ran with) under $work_dir/exp/stage_records;
# a re-run skips finished stages whose inputs are unchanged. A stage's whole output goes to its log,
# $work_dir/exp/logs/stageN_<name>.log; the console gets the lines the stage says matter
# (utils/console.sh, src/cvasr/console.py). One run at a time a work dir: a second one stops at
# once, naming the first (flock on $work_dir/exp/run.lock).
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prog=${CVASR_ENTRY:-$0}
printf -v command_line '%q ' "$prog" "$@"
command_line=${command_line% }

# ---- options (defaults; those left empty come from `cvasr defaults`) --------------------------
stage=0                 # first stage to run
stop_stage=5            # last stage to run
work_dir=${recipe_dir}  # where data/, dump/, exp/ and RESULTS.md go
lang=                   # Common Voice language code (run.sh sets the recipe's)
demo=false              # true: the corpus's demo data (local/data.sh) + tiny model, runs on CPU
upstream_ckpt=          # local XLS-R checkpoint (s3prl or fairseq format, or a transformers dir); unset: s3prl downloads
train_config=           # default: conf/train_xlsr300m_ctc.yaml (conf/train_demo_ctc.yaml with --demo)
decode_config=          # default: conf/decode_ctc.yaml
ngpu=1                  # GPUs for training (0: CPU)
launcher=espnet2        # who starts one training process a GPU: espnet2 or torchrun
nj=$(nproc 2>/dev/null || echo 2)  # parallel jobs for CPU stages and decoding
max_drop=               # share of a split that stages 1-2 may drop for bad input before failing
min_duration=           # stage 2 keeps train/dev clips of min..max seconds (test: all)
max_duration=
token_type=             # char (the seed's choice) or bpe (sentencepiece unigram)
nbpe=                   # sentencepiece vocabulary size for --token_type bpe
train_args=             # extra espnet2 training options, e.g. "--max_epoch 20"
asr_tag=                # the experiment is exp/asr_<tag> (default: <train config name>_<token type>)
use_lm=true             # stage 3 builds the word n-gram LM, stage 5 decodes with it too
lm_order=               # its order
lm_text=                # extra LM text (one sentence a line, raw or normalised)
asr_exp=                # experiment dir for stage 5 (e.g. from cvasr import-hf); default: stage 4's

options=(stage stop_stage work_dir lang demo upstream_ckpt train_config decode_config ngpu launcher nj
         max_drop min_duration max_duration token_type nbpe train_args asr_tag use_lm lm_order
         lm_text asr_exp)

. "${recipe_dir}/path.sh"
. "${recipe_dir}/utils/console.sh"
# Defaults stated once, in the package (cvasr/defaults.py): max_drop, durations, token type, nbpe.
_defaults=$(cvasr defaults) || { echo "$prog: 'cvasr defaults' failed (above): the package" \
    "does not run in ${CVASR_PYTHON_ENV:-.venv}; run 'make setup'" >&2; exit 2; }
while IFS='=' read -r _name _value; do
    case "$_name" in
        max_drop|min_duration|max_duration|token_type|nbpe|lm_order) printf -v "$_name" '%s' "$_value" ;;
        *) echo "$prog: unexpected default '$_name' from cvasr defaults" >&2; exit 2 ;;
    esac
done <<< "$_defaults"
unset _name _value _defaults

print_help() {
    cat <<EOF
Usage: $prog [--name value ...]   (--stop-stage and --stop_stage are the same)
  --stage N --stop-stage M   run stages N..M of
       0 corpus and upstream in place   1 corpus to Kaldi data dirs   2 audio dump
       3 tokens, stats, word n-gram LM  4 training (espnet2)          5 decoding and scoring
  --work_dir DIR       outputs: data/ dump/ exp/ RESULTS.md (default: ${recipe_dir})
  --lang CODE          Common Voice language code${lang:+ (default: ${lang})}; picks the text normaliser
  --demo true          the corpus's demo data and a tiny model, on CPU
  --upstream_ckpt PATH local wav2vec 2.0 / XLS-R checkpoint (or transformers directory);
                       unset: s3prl downloads xls_r_300m
  --train_config FILE  --decode_config FILE   YAML (defaults in conf/)
  --ngpu N             GPUs for training (default ${ngpu})   --nj N  parallel CPU jobs (default ${nj})
  --launcher espnet2|torchrun   who starts one training process a GPU (default ${launcher})
  --max_drop F         share of a split stages 1-2 may drop for bad input (default ${max_drop})
  --min_duration S --max_duration S   train/dev length filter of stage 2 (default ${min_duration}-${max_duration})
  --token_type char|bpe --nbpe N   token unit of stage 3 (default ${token_type}, ${nbpe} pieces for bpe)
  --train_args "ARGS"  extra espnet2 training options, e.g. "--max_epoch 20"
  --asr_tag TAG        the experiment dir is exp/asr_TAG (default: <train config name>_<token type>)
  --use_lm true|false  word n-gram LM in stage 3, decoding with it in stage 5 (default ${use_lm})
  --lm_order N         its order (default ${lm_order})
  --lm_text FILE       extra LM text, one sentence a line (dev/test sentences are removed)
  --asr_exp DIR        the experiment stage 5 decodes (e.g. from cvasr import-hf); default:
                       stage 4's exp/asr_<train config>_<token type>
EOF
    "${recipe_dir}/local/data.sh" --help | sed -n '/^Corpus options/,$p'
}

passthrough_unknown=true
. "${recipe_dir}/utils/parse_options.sh"
local_opts=("${passthrough_args[@]}")

die() { echo "$prog: $*" >&2; exit 2; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_seconds() { [[ $1 =~ ^[0-9]*\.?[0-9]+$ ]]; }

is_uint "$stage" && (( stage <= 5 )) || die "--stage must be 0..5, got '$stage'"
is_uint "$stop_stage" && (( stop_stage <= 5 )) || die "--stop-stage must be 0..5, got '$stop_stage'"
(( stage <= stop_stage )) || die "--stage ($stage) is after --stop-stage ($stop_stage)"
[[ $demo == true || $demo == false ]] || die "--demo must be true or false, got '$demo'"
is_uint "$ngpu" || die "--ngpu must be a whole number, got '$ngpu'"
[[ $launcher == espnet2 || $launcher == torchrun ]] || die "--launcher must be espnet2 or torchrun, got '$launcher'"
is_uint "$nj" && (( nj >= 1 )) || die "--nj must be at least 1, got '$nj'"
[[ $max_drop =~ ^(0(\.[0-9]+)?|1(\.0+)?|\.[0-9]+)$ ]] || die "--max_drop must be a number in [0, 1], got '$max_drop'"
is_seconds "$min_duration" || die "--min_duration must be a number of seconds, got '$min_duration'"
is_seconds "$max_duration" || die "--max_duration must be a number of seconds, got '$max_duration'"
[[ $token_type == char || $token_type == bpe ]] || die "--token_type must be char or bpe, got '$token_type'"
is_uint "$nbpe" && (( nbpe >= 2 )) || die "--nbpe must be a whole number >= 2, got '$nbpe'"
[[ $use_lm == true || $use_lm == false ]] || die "--use_lm must be true or false, got '$use_lm'"
is_uint "$lm_order" && (( lm_order >= 1 )) || die "--lm_order must be a whole number >= 1, got '$lm_order'"
if [ -n "$lm_text" ]; then
    [ -f "$lm_text" ] || die "--lm_text $lm_text does not exist"
    lm_text=$(cd "$(dirname "$lm_text")" && pwd)/$(basename "$lm_text")
fi
[ -z "$asr_tag" ] || [[ $asr_tag =~ ^[A-Za-z0-9][A-Za-z0-9_.+-]*$ ]] || die "--asr_tag must be letters, digits and _.+- (a folder name), got '$asr_tag'"
[ -n "$lang" ] || die "--lang is required: the Common Voice language code of the release (e.g. bn, cy, as)"
[[ $lang =~ ^[A-Za-z]{2,3}(-[A-Za-z0-9]+)?$ ]] || die "--lang must be a Common Voice language code, got '$lang'"
if [ "$demo" = true ]; then
    : "${train_config:=${recipe_dir}/conf/train_demo_ctc.yaml}"
    ngpu=0
else
    : "${train_config:=${recipe_dir}/conf/train_xlsr300m_ctc.yaml}"
fi
: "${decode_config:=${recipe_dir}/conf/decode_ctc.yaml}"

mkdir -p "$work_dir"
work_dir=$(cd "$work_dir" && pwd)
exp_dir=${work_dir}/exp
log_dir=${exp_dir}/logs
records_dir=${exp_dir}/stage_records
stage0_dir=${exp_dir}/stage0

# The corpus part: local/data.sh gets the options it shares with this script and the ones only
# it knows (checked here, before any stage runs: a bad option stops with exit status 2).
local_data() {
    "${recipe_dir}/local/data.sh" --work_dir "$work_dir" --lang "$lang" --nj "$nj" \
        --max_drop "$max_drop" --demo "$demo" "${local_opts[@]}" "$@"
}
local_data --validate_only true

mkdir -p "$log_dir" "$records_dir"

# One run at a time a work dir: two would write the same files. The lock is held until this
# script and every process it started have exited; the file says who holds it.
lock_file=${exp_dir}/run.lock
exec {lock_fd}>>"$lock_file"
if ! flock -n "$lock_fd"; then
    holder=$(head -n 1 "$lock_file" 2>/dev/null || true)
    holder_pid=$(sed -n 's/^pid \([0-9]*\).*/\1/p' <<< "$holder")
    if [ -n "$holder_pid" ] && ! kill -0 "$holder_pid" 2>/dev/null; then
        holder="$holder; that process has exited, but processes it started still hold the lock"
    fi
    echo "$prog: another run is using $work_dir (${holder:-holder unknown}): wait for it to" \
         "finish or stop it; the lock is $lock_file" >&2
    exit 1
fi
{ printf 'pid %s, started %s: %s\n' "$$" "$(date '+%Y-%m-%d %H:%M:%S')" "$command_line" \
    > "$lock_file"; } 2>/dev/null || true  # the lock holds without it (a full disk)

# The console: stages write their whole output to their logs, and say what matters on this
# descriptor (the terminal, or whatever run.sh's stdout is).
exec {console_fd}>&1
export CVASR_CONSOLE_FD=$console_fd

log() {
    local line
    line="$(date '+%Y-%m-%d %H:%M:%S') (run.sh) $*"
    echo "$line"
    { echo "$line" >> "${log_dir}/run.log"; } 2>/dev/null || true  # the console has it anyway
}

# "no space left on device writing DIR" when the filesystem of DIR is (next to) full: what a
# failed stage most likely ran into (the cvasr commands name the file; shell commands do not).
# The threshold is cvasr.nospace.FULL_BELOW's.
no_space_note() {
    local free
    free=$(stat -f -c '%a*%S' "$1" 2>/dev/null) || return 0
    free=$((free))
    (( free < 1048576 )) && echo "; no space left on device writing $1 ($free bytes free there)"
    return 0
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
    local status start
    start=$(stat -c %s "$stage_log" 2>/dev/null || echo 0)  # the log holds earlier runs too
    set +e
    ( set -e; "$fn" ) >> "$stage_log" 2>&1
    status=$?
    set -e
    if (( status != 0 )); then
        # the end of what this run wrote to the log, when no cvasr command said its error on
        # the console: what a script or a crash said only there
        local end=
        if ! tail -c "+$((start + 1))" "$stage_log" 2>/dev/null |
                grep -qE '^cvasr [a-z-]+: (unexpected )?error: '; then
            end=$(tail -c "+$((start + 1))" "$stage_log" 2>/dev/null | tail -n 3 | cut -c1-300 |
                  sed 's/^/    /' || true)
        fi
        log "stage $n ($name): FAILED (exit $status$(no_space_note "$work_dir")); the whole" \
            "output is in $stage_log${end:+, which ends:}"
        [ -z "$end" ] || printf '%s\n' "$end"
        exit 1
    fi
    if ! { printf '%s\n' "$signature" > "${record}.tmp" && mv "${record}.tmp" "$record"; } 2>/dev/null; then
        log "stage $n ($name): FAILED: its work is done, but its record could not be written" \
            "($record$(no_space_note "$records_dir"))"
        exit 1
    fi
    log "stage $n ($name): done"
}

# ---- stage 0: corpus (local/data.sh) and pretrained upstream in place -------------------------
stage0() {
    local upstream
    mkdir -p "$stage0_dir" "${work_dir}/downloads"
    local_data --stage 0 --stop_stage 0

    if [ -n "$upstream_ckpt" ]; then
        cvasr check-upstream "$upstream_ckpt"
        upstream=$(cd "$(dirname "$upstream_ckpt")" && pwd)/$(basename "$upstream_ckpt")
        if [ -d "$upstream" ]; then  # a transformers directory, converted to s3prl's format
            local converted=${work_dir}/downloads/upstream/$(basename "$upstream").s3prl.pt
            cvasr import-hf-upstream --model "$upstream" --out "$converted"
            upstream=$converted
        fi
    elif [ "$demo" = true ]; then
        upstream=${work_dir}/downloads/upstream/wav2vec2_tiny_random.pt
        [ -f "$upstream" ] || cvasr make-upstream --arch tiny --out "$upstream"
        cvasr check-upstream "$upstream"
    else
        cvasr fetch-upstream --name xls_r_300m --download-dir "${work_dir}/downloads/s3prl"
        upstream=s3prl:xls_r_300m
    fi
    printf '%s\n' "$upstream" > "${stage0_dir}/upstream"
    echo "upstream: $upstream"
}

# ---- stage 1: the corpus to Kaldi data dirs (local/data.sh) ------------------------------------
stage1() {
    local_data --stage 1 --stop_stage 1
}

# ---- stage 2: audio dump (16 kHz Kaldi ark) and length filtering --------------------------------
stage2() {
    cvasr dump --data-dir "${work_dir}/data" --dump-dir "${work_dir}/dump" \
        --min-duration "$min_duration" --max-duration "$max_duration" --max-drop "$max_drop" --nj "$nj"
}

# ---- stage 3: token list, shape statistics, word n-gram LM ---------------------------------------
token_dir=${work_dir}/data/token_list/${token_type}
lm_dir=${work_dir}/data/lm
stats_dir=${exp_dir}/asr_stats_${token_type}
upstream_spec() {
    [ -f "${stage0_dir}/upstream" ] || { say_error "no upstream recorded: run stage 0 first"; return 1; }
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
    if [ "$use_lm" = true ]; then
        local lm_extra=()
        [ -n "$lm_text" ] && lm_extra+=(--extra-text "$lm_text")
        cvasr make-lm --train-text "${work_dir}/data/train/text" \
            --exclude-text "${work_dir}/data/dev/text" "${work_dir}/data/test/text" \
            --lang "$lang" --order "$lm_order" --out "$lm_dir" "${lm_extra[@]}"
    fi
}

# ---- stage 4: training (espnet2; resumes from the experiment's checkpoint) ----------------------
asr_exp_given=$asr_exp
if [ -n "$asr_exp" ]; then
    [ -d "$asr_exp" ] || die "--asr_exp $asr_exp does not exist"
    (( stage > 4 || stop_stage < 4 )) || die "--asr_exp names an experiment to decode (stage 5); stage 4 trains into exp/asr_<config>_<token type> (or exp/asr_<tag> with --asr_tag): give --asr_exp with --stage 5"
    asr_exp=$(cd "$asr_exp" && pwd)
else
    asr_exp=${exp_dir}/asr_${asr_tag:-$(basename "${train_config%.*}")_${token_type}}
fi

stage4() {
    local extra=() words=()
    # Split on whitespace only: never evaluated, never globbed.
    read -r -a words <<< "$train_args"
    [ ${#words[@]} -gt 0 ] && extra=(-- "${words[@]}")
    local cmd=(cvasr train --dump-dir "${work_dir}/dump" --token-list "${token_dir}/tokens.txt"
               --config "$train_config" --upstream "$(upstream_spec)"
               --download-dir "${work_dir}/downloads/s3prl" --stats-dir "$stats_dir"
               --exp-dir "$asr_exp" --ngpu "$ngpu" --launcher "$launcher" "${extra[@]}")
    # the command as a line of the stage log, quoted: to run stage 4 by hand (several nodes)
    echo "# $(printf '%q ' "${cmd[@]}")"
    "${cmd[@]}"
}

# ---- stage 5: decoding dev and test (CTC alone, then with the LM), scoring, RESULTS.md ---------
score_decode() {  # score_decode DECODE_DIR SPLIT WHAT: the WER and CER lines, labelled
    local unit name label
    printf -v label '%-5s %-11s' "$2" "$3"
    for unit in word char; do
        name=wer
        [ "$unit" = char ] && name=cer
        cvasr score --ref "${work_dir}/dump/${2}/text" --hyp "${1}/text" \
            --utt2spk "${work_dir}/dump/${2}/utt2spk" --unit "$unit" --lang "$lang" \
            --out "${1}/score_${name}" --label "$label"
    done
}

stage5() {
    local device=cpu split dirs=() tag lm_tag record=()
    (( ngpu > 0 )) && device=cuda
    tag=$(basename "${decode_config%.*}")
    lm_tag=${tag}_lm
    for split in dev test; do
        # CTC alone; the log-posteriors are kept for the LM's decodes
        record=()
        [ "$split" = dev ] && [ "$use_lm" = false ] && record=(--record)
        cvasr decode --model "$asr_exp" --config "$decode_config" --no-lm "${record[@]}" \
            --data-dir "${work_dir}/dump/${split}" --out "${asr_exp}/${tag}/${split}" \
            --save-logp --device "$device" --nj "$nj"
        score_decode "${asr_exp}/${tag}/${split}" "$split" "CTC alone"
        dirs+=("${asr_exp}/${tag}/${split}")
    done
    if [ "$use_lm" = true ]; then
        # the LM weight and word bonus tuned on dev (and recorded in the experiment), then test
        # decoded once with them
        cvasr tune-lm --model "$asr_exp" --config "$decode_config" --lm "$lm_dir" \
            --logp "${asr_exp}/${tag}/dev/logp.scp" --ref "${work_dir}/dump/dev/text" \
            --out "${asr_exp}/${lm_tag}/dev" --nj "$nj"
        score_decode "${asr_exp}/${lm_tag}/dev" dev "with the LM"
        cvasr decode --model "$asr_exp" --logp "${asr_exp}/${tag}/test/logp.scp" \
            --out "${asr_exp}/${lm_tag}/test" --nj "$nj"
        score_decode "${asr_exp}/${lm_tag}/test" test "with the LM"
        dirs=("${asr_exp}/${tag}/dev" "${asr_exp}/${lm_tag}/dev" "${asr_exp}/${tag}/test"
              "${asr_exp}/${lm_tag}/test")
    fi
    cvasr results --exp "$asr_exp" --decode-dirs "${dirs[@]}" --device "$device" \
        --out "${work_dir}/RESULTS.md" > /dev/null
    say "RESULTS.md: ${work_dir}/RESULTS.md"
}

file_digest() { if [ -f "$1" ]; then sha1sum < "$1" | cut -c1-12; else echo none; fi; }
record_of() { cat "${records_dir}/stage$1.done" 2>/dev/null || true; }

run_stage 0 "demo=${demo} lang=${lang} corpus=${local_opts[*]} upstream_ckpt=${upstream_ckpt}" stage0
run_stage 1 "demo=${demo} lang=${lang} corpus=${local_opts[*]} max_drop=${max_drop}" stage1
run_stage 2 "data=$(record_of 1) min=${min_duration} max=${max_duration} max_drop=${max_drop}" stage2
file_stamp() { if [ -f "$1" ]; then stat -c '%s-%Y' "$1"; else echo none; fi; }  # big files
# stage 4 follows the token list and shape statistics, not the LM: a new LM never retrains
stats_signature="dump=$(record_of 2) token_type=${token_type} nbpe=${nbpe} config=$(file_digest "$train_config") upstream=$(cat "${stage0_dir}/upstream" 2>/dev/null || true)"
lm_signature="use_lm=${use_lm} lm_order=${lm_order} lm_text=${lm_text}:$(file_stamp "$lm_text")"
run_stage 3 "${stats_signature} ${lm_signature}" stage3
run_stage 4 "stats=${stats_signature} config=$(file_digest "$train_config") ngpu=${ngpu} train_args=${train_args} exp=${asr_exp}" stage4
run_stage 5 "train=$(record_of 4)${asr_exp_given:+ exp=${asr_exp}} ${lm_signature} lm_built=$(record_of 3 | md5sum | cut -c1-8) decode=$(file_digest "$decode_config") lang=${lang}" stage5

if (( stop_stage < 5 )); then
    next=$((stop_stage + 1))
    log "stages ${stage}-${stop_stage} finished; next: stage ${next} (${stage_names[$next]}):" \
        "run again with --stage ${next} --stop-stage 5"
    log "stages that follow: $(for n in $(seq "$next" 5); do printf '%s ' "${n}:${stage_names[$n]}"; done)"
else
    log "all stages finished"
fi
