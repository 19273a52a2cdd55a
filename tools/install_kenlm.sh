#!/usr/bin/env bash
# Build KenLM's lmplz and build_binary (the LM estimator stage 3 runs) into BIN_DIR, from the kenlm
# source package on PyPI: no Debian package and no wheel ships them. Needs cmake, a C++ compiler
# and Boost (program-options, system, thread, test: tools/install_system_deps.sh). Idempotent: a
# stamp records the version built, and a second run does nothing. About 40 s on 2 cores.
#   tools/install_kenlm.sh BIN_DIR PYTHON
set -euo pipefail
bin_dir=$1
python=$2
version=0.3.0
stamp=${bin_dir}/.kenlm-${version}-built
if [ -f "$stamp" ] && [ -x "${bin_dir}/lmplz" ] && [ -x "${bin_dir}/build_binary" ]; then
    exit 0
fi
for tool in cmake c++; do
    command -v "$tool" >/dev/null || { echo "install_kenlm.sh: $tool not found (make system-deps installs it)" >&2; exit 1; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/cvasr-kenlm.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "building KenLM ${version} (lmplz, build_binary) from PyPI's source package into ${bin_dir}"
"$python" -m pip download --disable-pip-version-check -q --no-binary kenlm "kenlm==${version}" -d "$work"
tar -xzf "${work}/kenlm-${version}.tar.gz" -C "$work"
cmake -S "${work}/kenlm-${version}" -B "${work}/build" -DCMAKE_BUILD_TYPE=Release > "${work}/cmake.log" 2>&1 \
    || { cat "${work}/cmake.log" >&2; exit 1; }
cmake --build "${work}/build" --target lmplz build_binary -j "$(nproc)" > "${work}/build.log" 2>&1 \
    || { tail -40 "${work}/build.log" >&2; exit 1; }
mkdir -p "$bin_dir"
install -m 755 "${work}/build/bin/lmplz" "${work}/build/bin/build_binary" "$bin_dir/"
touch "$stamp"
echo "KenLM ${version}: ${bin_dir}/lmplz, ${bin_dir}/build_binary"
