#!/usr/bin/env bash
# Control-plane throughput: wrk against a release manager (no VMs) in a private network namespace.
# Prints req/s and latency percentiles for an authenticated `GET /v1/vms` and for a 401.
# Usage (root): scripts/bench-http.sh   — needs `wrk` (apt) and a built image for the startup check.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
if [[ "${1:-}" != "--in-netns" ]]; then
  cargo build -q --release -p rds-manager
  exec unshare -n "$0" --in-netns
fi
ip link set lo up
image=/var/cache/run-dat-sheesh/images/current
work=$(mktemp -d); chmod 711 "$work"
API_KEY=bench-key-0123456789 ADMIN_EMAIL=a@b.c ADMIN_PASSWORD=bench-password-1 PORT=3999 \
  STORAGE_ROOT="$work/s" SQLITE_PATH="$work/m.db" KERNEL_PATH="$image/vmlinux" INITRD_PATH="$image/initrd" \
  BASE_ROOTFS_PATH="$image/rootfs.ext4" VHOST_VSOCK_BIN=/var/cache/run-dat-sheesh/tools/vhost-device-vsock-0.3.0/bin/vhost-device-vsock \
  RATE_LIMIT_GLOBAL=0 RUST_LOG=error target/release/run-dat-sheesh >"$work/log" 2>&1 &
pid=$!
trap 'kill $pid; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf localhost:3999/healthz >/dev/null && break; sleep 0.1; done
echo "GET /v1/vms with a valid key:"
wrk -t2 -c16 -d10s --latency -H 'X-API-Key: bench-key-0123456789' http://127.0.0.1:3999/v1/vms | grep -E "Requests/sec|50%|99%"
echo "GET /v1/vms without a key (401):"
wrk -t2 -c16 -d10s --latency http://127.0.0.1:3999/v1/vms | grep -E "Requests/sec|50%|99%"
echo "manager RSS after the load: $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$pid/status)"
