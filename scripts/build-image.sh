#!/usr/bin/env bash
# Builds the default guest image: static rds-agent and rds-init (glibc,
# crt-static; own target dir so the host build cache stays valid), then
# `rds-image build`. Idempotent: an unchanged build prints "up to date".
# The last line printed is the image directory.
#
# Env: RDS_CACHE_DIR (default /var/cache/run-dat-sheesh), RDS_IMAGE_OUT_ROOT
# (default $RDS_CACHE_DIR/images).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
cache="${RDS_CACHE_DIR:-/var/cache/run-dat-sheesh}"
out_root="${RDS_IMAGE_OUT_ROOT:-$cache/images}"
target=x86_64-unknown-linux-gnu
guest_dir="$repo/target/guest"

echo "building static rds-agent and rds-init" >&2
RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$guest_dir" \
  cargo build --release --target "$target" -p rds-agent -p rds-init >&2

echo "building rds-image" >&2
cargo build --release -p rds-image >&2
bin_dir="${CARGO_TARGET_DIR:-$repo/target}/release"

exec "$bin_dir/rds-image" build \
  --agent "$guest_dir/$target/release/rds-agent" \
  --init "$guest_dir/$target/release/rds-init" \
  --cache-dir "$cache" --out-root "$out_root"
