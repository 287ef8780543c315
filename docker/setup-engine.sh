#!/usr/bin/env bash
# Prepare a Debian 12 machine (as root) for `make test`: install the Docker engine, Compose v1, mmdebstrap,
# BIND and its tools, Redis (the unit tests run a real BIND and Redis on loopback) and openssl from Debian's
# packages when missing, start dockerd when the engine does not answer (no systemd as PID 1 here), and wait
# until `docker info` works. Idempotent; `make test` and `make demo` call it.
set -euo pipefail

log() { echo "setup-engine: $*" >&2; }

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

have_cmd dockerd        || need+=(docker.io)
have_cmd docker         || need+=(docker.io)
have_cmd docker-compose || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
have_cmd mmdebstrap     || need+=(mmdebstrap)
have_cmd openssl        || need+=(openssl)
have_cmd named          || need+=(bind9)
have_pkg bind9-dnsutils || need+=(bind9-dnsutils)
have_cmd tsig-keygen    || need+=(bind9-utils)
have_cmd redis-server   || need+=(redis-server)
# mmdebstrap needs the archive keyring named in the machine's sources file.
have_pkg debian-archive-keyring || need+=(debian-archive-keyring)

if [ "${#need[@]}" -gt 0 ]; then
  # de-duplicate
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  if [ "$(id -u)" != 0 ]; then
    log "missing packages (${need[*]}) and not root; install them first"; exit 1
  fi
  log "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
else
  log "packages present"
fi

if docker info >/dev/null 2>&1; then
  log "docker engine is running"
  exit 0
fi

if [ -d /run/systemd/system ] && have_cmd systemctl; then
  log "starting docker via systemd"
  systemctl start docker || true
fi

if ! docker info >/dev/null 2>&1; then
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    log "starting dockerd in the background (log: /tmp/dockerd.log)"
    nohup dockerd >/tmp/dockerd.log 2>&1 </dev/null &
  fi
fi

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    log "docker engine is up"
    exit 0
  fi
  sleep 1
done
log "docker engine did not come up within 60 s; tail of /tmp/dockerd.log:"
tail -n 30 /tmp/dockerd.log >&2 || true
exit 1
