#!/usr/bin/env bash
# Install the Debian packages the recipe needs, only those missing. Idempotent.
#   espeak-ng        the demo corpus's synthesiser (Assamese voice)
#   sox, libsox-fmt-mp3, ffmpeg   audio tools (mp3 support; ffmpeg is the data-prep baseline)
#   sctk             NIST sclite, the scoring oracle and `cvasr score --engine sclite`
#   cmake, g++, libboost-{program-options,system,thread,test}-dev, zlib1g-dev
#                    to build KenLM's lmplz and build_binary (tools/install_kenlm.sh)
set -euo pipefail
packages=(espeak-ng sox libsox-fmt-mp3 ffmpeg sctk cmake g++ libboost-program-options-dev
          libboost-system-dev libboost-thread-dev libboost-test-dev zlib1g-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "system packages: all present (${packages[*]})"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "missing system packages: ${missing[*]}; this is not a Debian/Ubuntu system: install" \
         "their equivalents with your package manager, then run make setup again" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${missing[*]}" >&2
    echo "install them as root, then run make setup again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
