#!/usr/bin/env bash
# Installs what the tests drive for real: a Docker engine (started without a bridge, since agent
# containers have no network), debootstrap for the registry-less base image, Node/npm for the
# pinned Codex CLI, Debian's Chromium (and a font) for the web chat's browser tests.
# Idempotent: it only installs what is missing.
# Without root it installs nothing and says what is missing; tests that need it then skip loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v npm >/dev/null || need+=(nodejs npm)
[[ -x /usr/bin/chromium ]] || need+=(chromium fonts-dejavu-core)

if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-deps: missing ${need[*]} (run as root, or install them yourself); tests that need them will skip" >&2
    exit 0
  fi
  echo "install-test-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [[ $(id -u) -eq 0 ]]; then
  bash scripts/start-dockerd.sh
  bash scripts/bootstrap-base-image.sh
fi
