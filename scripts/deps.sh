#!/usr/bin/env bash
# Installs the Debian packages Weft's tests and benchmarks run against, only
# when a binary is missing, so a second run costs nothing. Safe to re-run.
set -euo pipefail

# binary -> Debian package
declare -A want=(
  [haproxy]=haproxy
  [nginx]=nginx
  [prometheus]=prometheus
  [nats-server]=nats-server
  # containers: the image's CA bundle (make image), the capture test's
  # network namespace (ip), app (curl, as another uid with setpriv) and
  # rule listing (nft; the rules themselves go through netlink).
  [update-ca-certificates]=ca-certificates
  [ip]=iproute2
  [curl]=curl
  [setpriv]=util-linux
  [nft]=nftables
  [chromium]=chromium # the dashboard's e2e suite drives it headless
  # the README walk-through (test/e2e/readme_test.go) pastes curl and python3 lines
  [python3]=python3
  [etcd]=etcd-server
)

# Docker Compose v2 for the compose e2e test (Debian ships only 1.29):
# built from the Go module proxy once, cached outside the clone.
bash "$(dirname "$0")/compose-v2.sh" >/dev/null || echo "deps: compose v2 not built; the compose e2e runs under docker-compose 1.29 only" >&2

missing=()
for bin in "${!want[@]}"; do
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
    missing+=("${want[$bin]}")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Packages that ship a service must not keep one running: tests start their own.
for svc in nginx haproxy prometheus nats-server etcd; do
  $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
# nats-server ships only a systemd unit (no init script): disable it where
# systemd runs; the messaging tests start their own on a free port.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now nats-server >/dev/null 2>&1 || true
  $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
fi
