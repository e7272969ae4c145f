#!/usr/bin/env bash
# Builds debian:bookworm-slim locally (debootstrap --variant=minbase + docker import) for machines
# that cannot pull from an image registry, such as CI. Idempotent: does nothing if the image exists.
set -euo pipefail

IMAGE="${BASE_IMAGE:-debian:bookworm-slim}"
SUITE="${SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "bootstrap-base-image: $IMAGE already present"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "bootstrap-base-image: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "bootstrap-base-image: debootstrap needs root" >&2; exit 1; }

root=$(mktemp -d /var/tmp/nanohost-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "bootstrap-base-image: debootstrap $SUITE from $MIRROR (about 20-60 s)"
start=$(date +%s)
debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 || {
  echo "bootstrap-base-image: debootstrap failed; last lines:" >&2; tail -n 20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# Slim it like the official image: no apt lists, docs or caches.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/*
tar -C "$root" -c . | docker import - "$IMAGE" >/dev/null
echo "bootstrap-base-image: imported $IMAGE in $(( $(date +%s) - start )) s"
