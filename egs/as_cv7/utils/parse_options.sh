# Parse `--name value` / `--name=value` options into shell variables that the caller declared.
#
# The caller lists the accepted names in the array `options` (underscore spelling) after setting
# their defaults; dashes in option names are read as underscores, so --stop-stage and --stop_stage
# are the same option. Anything else is an error naming the option, never an assignment to an
# arbitrary variable. `--help` prints the caller's `help_message`.

_is_option() {
    local name=$1 known
    for known in "${options[@]}"; do
        [ "$known" = "$name" ] && return 0
    done
    return 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            printf '%s\n' "${help_message:-}"
            exit 0 ;;
        --*=*)
            _name=${1%%=*}; _value=${1#*=}; shift ;;
        --*)
            _name=$1
            if [ $# -lt 2 ]; then
                echo "$0: option $1 needs a value" >&2
                exit 2
            fi
            _value=$2; shift 2 ;;
        *)
            echo "$0: unexpected argument '$1' (options are --name value; see --help)" >&2
            exit 2 ;;
    esac
    _name=${_name#--}
    _name=${_name//-/_}
    if ! _is_option "$_name"; then
        echo "$0: unknown option --${_name} (see --help for the options)" >&2
        exit 2
    fi
    printf -v "$_name" '%s' "$_value"
done
unset _name _value
