# Parse `--name value` / `--name=value` options into shell variables that the caller declared.
#
# The caller lists the accepted names in the array `options` (underscore spelling) after setting
# their defaults; dashes in option names are read as underscores, so --stop-stage and --stop_stage
# are the same option. Anything else is an error naming the option, never an assignment to an
# arbitrary variable, unless the caller sets `passthrough_unknown=true`: then unknown options are
# collected, as `--name value` pairs, in the array `passthrough_args` for the caller to hand on
# (asr.sh hands the corpus options to local/data.sh, which checks them). `--help` calls the
# caller's function `print_help` if there is one, else prints `help_message`. Messages name the
# program as `prog` (default: $0).

_is_option() {
    local name=$1 known
    for known in "${options[@]}"; do
        [ "$known" = "$name" ] && return 0
    done
    return 1
}

passthrough_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            if declare -F print_help >/dev/null; then print_help; else printf '%s\n' "${help_message:-}"; fi
            exit 0 ;;
        --*=*)
            _name=${1%%=*}; _value=${1#*=}; shift ;;
        --*)
            _name=$1
            if [ $# -lt 2 ]; then
                echo "${prog:-$0}: option $1 needs a value" >&2
                exit 2
            fi
            _value=$2; shift 2 ;;
        *)
            echo "${prog:-$0}: unexpected argument '$1' (options are --name value; see --help)" >&2
            exit 2 ;;
    esac
    _name=${_name#--}
    _name=${_name//-/_}
    if ! _is_option "$_name"; then
        if [ "${passthrough_unknown:-false}" = true ] && [[ $_name =~ ^[a-z][a-z0-9_]*$ ]]; then
            passthrough_args+=("--${_name}" "$_value")
            continue
        fi
        echo "${prog:-$0}: unknown option --${_name} (see --help for the options)" >&2
        exit 2
    fi
    printf -v "$_name" '%s' "$_value"
done
unset _name _value
