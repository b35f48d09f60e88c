#!/usr/bin/env bash
# The TypeScript SDK's checks and tests (sdk/typescript) against a real manager with real guests.
# Idempotent: node_modules is installed once per package-lock (npm ci) under
# /var/cache/run-dat-sheesh/node and linked into the SDK. Builds the SDK and its tests with tsc
# (strict), builds the manager, then runs test/run.js inside a network namespace of its own (the
# manager sets up a bridge and nftables tables that must never touch the host's). run.js starts the
# manager, fails when src/generated/openapi.ts has drifted from its /openapi.json, and runs every
# test file with node's test runner, the Deno smoke test included.
# Usage: scripts/test-sdk-typescript.sh [--bench] [IMAGE_DIR [VHOST_BIN]] [-- node --test args]
# --bench runs sdk/typescript/bench.ts (SDK overhead beside a bare fetch) in the namespace instead.
set -euo pipefail
bench=0
[[ ${1:-} == --bench ]] && { bench=1; shift; }

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sdk="$repo/sdk/typescript"
CACHE=${RDS_CACHE_DIR:-/var/cache/run-dat-sheesh}
image=$CACHE/images/current
vhost=$CACHE/tools/vhost-device-vsock-0.3.0/bin/vhost-device-vsock
if [[ $# -gt 0 && $1 != -- ]]; then image=$1; shift; fi
if [[ $# -gt 0 && $1 != -- ]]; then vhost=$1; shift; fi
if [[ ${1:-} == -- ]]; then shift; fi

hash=$(cat "$sdk/package.json" "$sdk/package-lock.json" | sha256sum | cut -c1-16)
mods="$CACHE/node/sdk-typescript-$hash"
# The stamp marks a finished install; an interrupted one is redone.
if [[ ! -f "$mods/.installed" ]]; then
  echo "[sdk-ts] npm ci into $mods" >&2
  rm -rf "$mods"
  mkdir -p "$mods"
  cp "$sdk/package.json" "$sdk/package-lock.json" "$mods/"
  (cd "$mods" && npm ci --no-audit --no-fund --loglevel=error >&2)
  touch "$mods/.installed"
fi
# A node_modules of the developer's own (a real directory) is left alone and used.
if [[ -L "$sdk/node_modules" || ! -e "$sdk/node_modules" ]]; then
  ln -sfn "$mods/node_modules" "$sdk/node_modules"
else
  echo "[sdk-ts] using the existing $sdk/node_modules (not the cached install)" >&2
fi

echo "[sdk-ts] tsc (strict): the SDK to dist/, the tests to build/" >&2
rm -rf "$sdk/dist" "$sdk/build"
(cd "$sdk" && node_modules/.bin/tsc -p tsconfig.json && node_modules/.bin/tsc -p tsconfig.test.json)

# RDS_MANAGER_BIN: a manager binary built already (scripts/test.sh passes the one cargo test built).
manager=${RDS_MANAGER_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/run-dat-sheesh}
[[ -n ${RDS_MANAGER_BIN:-} ]] || (cd "$repo" && cargo build -q -p rds-manager)

ns="rds-sdk-ts-$$"
cleanup() {
  # Whatever is left in the namespace (a manager or guest after node was killed) is ours.
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns delete "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
run=(node "$sdk/build/test/run.js" "$@")
((bench)) && run=(node "$sdk/build/bench.js")
echo "[sdk-ts] ${run[*]:1:1} in network namespace $ns" >&2
ip netns exec "$ns" env RDS_SDK_NETNS=1 RDS_MANAGER_BIN="$manager" RDS_TEST_IMAGE_DIR="$image" \
  VHOST_VSOCK_BIN="$vhost" "${run[@]}"
