#!/usr/bin/env bash
# Sets up everything voicebot needs on a Debian/Ubuntu machine: system libraries, .venv/, the package.
# Idempotent: run it again after pulling. Used by `make setup` (and so by `make run` and `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."

# System libraries: PortAudio (sounddevice), Opus (Discord voice), libsndfile (soundfile),
# espeak-ng (Piper's phonemizer data is bundled, but tests also synthesize speech with espeak-ng),
# sox (tests measure audio), docker-compose (tests validate docker-compose.yml offline),
# chromium + fonts-dejavu-core (tests render `voicebot audit report` pages in headless Chromium).
apt_runtime=(libportaudio2 libopus0 libsndfile1 espeak-ng)
apt_test=(sox docker-compose chromium fonts-dejavu-core)
apt_pkgs=("${apt_runtime[@]}" "${apt_test[@]}")
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# llama-cpp-python builds from source the first time (~10 min on 2 cores); pip caches the wheel after that.
echo "setup: installing voicebot and its models into .venv (first time: ~15 min, llama.cpp compiles)"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,discord]"
echo "setup: done. Try: .venv/bin/voicebot --help"
