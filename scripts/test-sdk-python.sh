#!/usr/bin/env bash
# The Python SDK's tests (sdk/python/tests) against a real manager with real guests. Idempotent: the
# venv is cached under /var/cache/run-dat-sheesh/venvs, keyed by the SDK's pyproject and lock file.
# pytest runs inside a network namespace of its own, where its session fixture starts the manager
# (which sets up a bridge and nftables tables that must never touch the host's). Part of scripts/test.sh.
# Usage: scripts/test-sdk-python.sh [--bench] [IMAGE_DIR [VHOST_BIN]] [-- pytest args]
# --bench runs sdk/python/bench.py (SDK overhead, docs/benchmarks.md) in the namespace instead.
set -euo pipefail
bench=0
[[ ${1:-} == --bench ]] && { bench=1; shift; }

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sdk="$repo/sdk/python"
CACHE=${RDS_CACHE_DIR:-/var/cache/run-dat-sheesh}
image=$CACHE/images/current
vhost=$CACHE/tools/vhost-device-vsock-0.3.0/bin/vhost-device-vsock
if [[ $# -gt 0 && $1 != -- ]]; then image=$1; shift; fi
if [[ $# -gt 0 && $1 != -- ]]; then vhost=$1; shift; fi
if [[ ${1:-} == -- ]]; then shift; fi

hash=$(cat "$sdk/pyproject.toml" "$sdk/requirements-test.lock" | sha256sum | cut -c1-16)
venv="$CACHE/venvs/sdk-python-$hash"
# A venv cannot be moved (its scripts name their own path): the stamp marks a finished install.
if [[ ! -f "$venv/.installed" ]]; then
  echo "[sdk-python] creating $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$sdk/requirements-test.lock" >&2
  touch "$venv/.installed"
fi
# The SDK itself is imported from this clone (PYTHONPATH below), so the cached venv serves every clone.

# RDS_MANAGER_BIN: a manager binary built already (scripts/test.sh passes the one cargo test built).
manager=${RDS_MANAGER_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/run-dat-sheesh}
[[ -n ${RDS_MANAGER_BIN:-} ]] || (cd "$repo" && cargo build -q -p rds-manager)

ns="rds-sdk-py-$$"
cleanup() {
  # Whatever is left in the namespace (a manager or guest after pytest was killed) is ours.
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns delete "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
run=("$venv/bin/python" -m pytest -q -rs -p no:cacheprovider "$sdk/tests" "$@")
((bench)) && run=("$venv/bin/python" "$sdk/bench.py")
echo "[sdk-python] ${run[*]:1:3} in network namespace $ns" >&2
ip netns exec "$ns" env RDS_SDK_NETNS=1 PYTHONPATH="$sdk/src" RDS_MANAGER_BIN="$manager" RDS_TEST_IMAGE_DIR="$image" \
  VHOST_VSOCK_BIN="$vhost" "${run[@]}"
