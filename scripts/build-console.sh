#!/usr/bin/env bash
# Builds the admin console (console/: TypeScript + Preact, bundled by esbuild) into a cache directory
# outside the clone, keyed by a hash of its sources, and prints that directory last. A cached build is
# reused as is; otherwise `npm ci` (pinned by console/package-lock.json), a type check and the bundle.
# crates/manager/build.rs calls this and embeds the result; scripts/test.sh and scripts/run.sh call it
# first so a broken console fails loudly instead of being left out of the binary.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE=${RDS_CACHE_DIR:-/var/cache/run-dat-sheesh}
log() { printf '[build-console] %s\n' "$*" >&2; }

sources=(console/src console/public console/package.json console/package-lock.json console/tsconfig.json
  console/build.mjs scripts/build-console.sh)
hash=$(cd "$repo" && find "${sources[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum \
  | sha256sum | cut -c1-16)
out="$CACHE/console/$hash"
if [[ -f "$out/index.html" ]]; then
  log "cached: $out"
  echo "$out"
  exit 0
fi
command -v npm >/dev/null || { log "npm is missing (scripts/install-deps.sh installs it)"; exit 1; }

mkdir -p "$CACHE/console"
# cargo may run several builds at once (clippy, test, another engineer's build): one npm at a time.
exec 9>"$CACHE/console/.lock"
flock 9
if [[ -f "$out/index.html" ]]; then
  echo "$out"
  exit 0
fi
cd "$repo/console"
stamp=node_modules/.rds-lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$want" >"$stamp"
fi
log "type check"
node_modules/.bin/tsc --noEmit -p . >&2
tmp="$CACHE/console/.tmp-$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
node build.mjs "$tmp" >&2
mv -T "$tmp" "$out"
log "built: $out"
echo "$out"
