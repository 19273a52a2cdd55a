# The recipe's console, for its shell scripts (sourced by asr.sh and local/data.sh).
#
# Under run.sh each stage's stdout and stderr go to its log (exp/logs/stageN_<name>.log) only, and
# the terminal is handed to the stage as the file descriptor named by CVASR_CONSOLE_FD. `say`
# writes a line to stdout (the log) and to the console, `say_error` to stderr and the console.
# Without CVASR_CONSOLE_FD (a script run on its own) they are plain echo and echo >&2.
# src/cvasr/console.py is the Python side.

say() {
    printf '%s\n' "$*"
    if [ -n "${CVASR_CONSOLE_FD:-}" ]; then printf '%s\n' "$*" >&"${CVASR_CONSOLE_FD}"; fi
}

say_error() {
    printf '%s\n' "$*" >&2
    if [ -n "${CVASR_CONSOLE_FD:-}" ]; then printf '%s\n' "$*" >&"${CVASR_CONSOLE_FD}"; fi
}
