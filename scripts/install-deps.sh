#!/usr/bin/env bash
# Installs what the manager and its tests need on Debian 12, idempotently: apt packages, and
# vhost-device-vsock (crates.io) into a cache outside the clone. Prints the helper's path last.
set -euo pipefail

CACHE=${RDS_CACHE_DIR:-/var/cache/run-dat-sheesh}
VHOST_VERSION=0.3.0
VHOST_ROOT="$CACHE/tools/vhost-device-vsock-$VHOST_VERSION"
# postgresql: the server the DB tests run on (scripts/test-postgres.sh starts a private cluster).
# chromium, chromium-driver: the browser the console tests drive (tests/browser_console.rs).
PACKAGES=(qemu-system-x86 busybox-static socat debootstrap kmod cpio lz4 xfsprogs btrfs-progs
  nftables e2fsprogs unzip procps python3-pip python3-venv postgresql chromium chromium-driver)

log() { printf '[install-deps] %s\n' "$*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
  log "apt: all packages present"
fi
command -v npm >/dev/null || { log "apt: installing npm"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >&2; }

if [[ ! -x "$VHOST_ROOT/bin/vhost-device-vsock" ]]; then
  log "cargo: installing vhost-device-vsock $VHOST_VERSION (about 2 minutes)"
  cargo install --locked --quiet vhost-device-vsock --version "$VHOST_VERSION" --root "$VHOST_ROOT" >&2
else
  log "vhost-device-vsock $VHOST_VERSION present"
fi
# Swagger UI assets the manager embeds at build time (crates/manager/build.rs).
SWAGGER_TGZ="$CACHE/downloads/swagger-ui-dist-5.32.0.tgz"
if [[ ! -f "$SWAGGER_TGZ" ]]; then
  log "npm: fetching swagger-ui-dist 5.32.0"
  mkdir -p "$CACHE/downloads"
  (cd "$CACHE/downloads" && npm pack --silent swagger-ui-dist@5.32.0 >/dev/null)
fi
echo "$VHOST_ROOT/bin/vhost-device-vsock"
