#!/usr/bin/env bash
# Installs what the tests drive for real: everything running needs (install-run-deps.sh: the
# Docker engine, debootstrap and the base image), plus Node/npm for the pinned Codex CLI and
# Debian's Chromium (and a font) for the web chat's browser tests.
# Idempotent: it only installs what is missing.
# Without root it installs nothing and says what is missing; tests that need it then skip loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v npm >/dev/null || need+=(nodejs npm)
[[ -x /usr/bin/chromium ]] || need+=(chromium fonts-dejavu-core)

if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-deps: missing ${need[*]} (run as root, or install them yourself); tests that need them will skip" >&2
  else
    echo "install-test-deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

bash scripts/install-run-deps.sh
