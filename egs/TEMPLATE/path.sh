# Environment for the recipe: the project's virtualenv, made by `make setup` at the repo root.
# Sourced by asr.sh and local/data.sh; users may source it to call `cvasr` and espnet2 tools by
# hand. The recipe runs the package of the tree it lives in (src/ first on PYTHONPATH), so a second
# checkout or worktree may share one virtualenv through CVASR_PYTHON_ENV.
_cvasr_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${CVASR_PYTHON_ENV:-}" ]; then
    CVASR_PYTHON_ENV=${_cvasr_root}/.venv
fi
if [ ! -x "${CVASR_PYTHON_ENV}/bin/cvasr" ]; then
    echo "path.sh: ${CVASR_PYTHON_ENV}/bin/cvasr not found: run 'make setup' in ${_cvasr_root}" \
         "(or set CVASR_PYTHON_ENV to a virtualenv where cvasr is installed)" >&2
    return 1
fi
export PATH=${CVASR_PYTHON_ENV}/bin:${PATH}
export PYTHONPATH=${_cvasr_root}/src${PYTHONPATH:+:${PYTHONPATH}}
# sclite from Debian's sctk lives outside PATH.
[ -d /usr/lib/sctk/bin ] && export PATH=${PATH}:/usr/lib/sctk/bin
export PYTHONIOENCODING=UTF-8
export LC_ALL=C.UTF-8
unset _cvasr_root
