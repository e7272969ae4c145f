#!/usr/bin/env bash
# Installs what running nanohost needs, no more: a Docker engine (started without a bridge, since
# agent containers have no network) and debootstrap to build the base image where no registry can
# be reached. Idempotent: it only installs what is missing.
# Without root it installs nothing and says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)

if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-run-deps: missing ${need[*]} (run as root, or install them yourself)" >&2
    exit 0
  fi
  echo "install-run-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [[ $(id -u) -eq 0 ]]; then
  bash scripts/start-dockerd.sh
  bash scripts/bootstrap-base-image.sh
fi
