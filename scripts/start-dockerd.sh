#!/usr/bin/env bash
# Starts a Docker engine for tests when none answers: no bridge and no iptables, because agent
# containers run with network_mode=none and nothing here may be addressed beyond 127.0.0.1.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi
command -v dockerd >/dev/null || { echo "start-dockerd: dockerd is missing (apt-get install docker.io)" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "start-dockerd: starting dockerd needs root" >&2; exit 1; }
log=/var/log/nanohost-dockerd.log
nohup dockerd --bridge=none --iptables=false >"$log" 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && { echo "start-dockerd: engine up"; exit 0; }
  sleep 0.5
done
echo "start-dockerd: the engine did not answer within 30 s; see $log:" >&2
tail -n 20 "$log" >&2
exit 1
