#!/usr/bin/env bash
# One command on a fresh Debian 12 host (as root): installs dependencies, builds the default guest
# image (cached), builds the manager and runs it on :${PORT:-3000} with that image as the default.
# API_KEY / ADMIN_EMAIL / ADMIN_PASSWORD may be set; otherwise they are generated once and kept in
# $STORAGE_ROOT/credentials (0600).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export STORAGE_ROOT=${STORAGE_ROOT:-/var/lib/run-dat-sheesh}
export SQLITE_PATH=${SQLITE_PATH:-$STORAGE_ROOT/manager.db}
export PORT=${PORT:-3000}

vhost=$(scripts/install-deps.sh | tail -n 1)
scripts/build-console.sh >/dev/null
image=$(scripts/build-image.sh | tail -n 1)
echo "[run] building the manager" >&2
cargo build --release -p rds-manager >&2

mkdir -p "$STORAGE_ROOT"
creds="$STORAGE_ROOT/credentials"
if [[ ! -f "$creds" ]]; then
  umask 077
  {
    echo "API_KEY=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')"
    echo "ADMIN_EMAIL=admin@localhost"
    echo "ADMIN_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
  } >"$creds"
fi
# Values from the environment win over the stored ones.
saved_key=${API_KEY:-}; saved_email=${ADMIN_EMAIL:-}; saved_pw=${ADMIN_PASSWORD:-}
# shellcheck disable=SC1090
source "$creds"
export API_KEY=${saved_key:-$API_KEY} ADMIN_EMAIL=${saved_email:-$ADMIN_EMAIL} ADMIN_PASSWORD=${saved_pw:-$ADMIN_PASSWORD}

export KERNEL_PATH=${KERNEL_PATH:-$image/vmlinux}
export INITRD_PATH=${INITRD_PATH:-$image/initrd}
export BASE_ROOTFS_PATH=${BASE_ROOTFS_PATH:-$image/rootfs.ext4}
export VHOST_VSOCK_BIN=${VHOST_VSOCK_BIN:-$vhost}
# Guests boot in software emulation (TCG) where KVM cannot run them: allow for slow boots.
export VSOCK_HEALTH_TIMEOUT_MS=${VSOCK_HEALTH_TIMEOUT_MS:-60000}
export LOG_FORMAT=${LOG_FORMAT:-pretty}

cat >&2 <<MSG

run-dat-sheesh on http://localhost:$PORT  (image: $image)
API key: $API_KEY        (stored in $creds)
Console: http://localhost:$PORT/  (sign in as $ADMIN_EMAIL, password in $creds)
Try:
  curl -s -X POST localhost:$PORT/v1/vms -H 'X-API-Key: $API_KEY' -H 'Content-Type: application/json' -d '{"cpu":1,"memMb":512}'
  curl -s -X POST localhost:$PORT/v1/vms/<id>/exec -H 'X-API-Key: $API_KEY' -H 'Content-Type: application/json' -d '{"cmd":"uname -a"}'
  curl -s -X DELETE localhost:$PORT/v1/vms/<id> -H 'X-API-Key: $API_KEY'

MSG
exec "${CARGO_TARGET_DIR:-$repo/target}/release/run-dat-sheesh"
