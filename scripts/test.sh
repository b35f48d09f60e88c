#!/usr/bin/env bash
# The project's test command: installs dependencies, builds the guest image (cached), starts the test
# Postgres server, then lints and runs every test, including end-to-end tests that boot real QEMU
# guests; the DB story and every test of the manager's API run on SQLite and again on Postgres.
# RDS_REQUIRE_E2E=1 (set by CI) turns a missing prerequisite into a failure instead of a skip.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

vhost=$(scripts/install-deps.sh | tail -n 1)
# The console bundle the manager embeds: built here so a type error fails the run (build.rs reuses it).
scripts/build-console.sh >/dev/null
image=$(scripts/build-image.sh | tail -n 1)
# The Postgres half of the DB tests (tests make and drop their own databases on this server).
export RDS_TEST_DATABASE_URL
RDS_TEST_DATABASE_URL=$(scripts/test-postgres.sh | tail -n 1)

disk() { echo "[test] free space: $(df -h --output=avail "$repo" | tail -n 1 | tr -d ' ') here, $(df -h --output=avail "${TMPDIR:-/tmp}" | tail -n 1 | tr -d ' ') in ${TMPDIR:-/tmp}" >&2; }
disk
echo "[test] cargo fmt --check" >&2
cargo fmt --all -- --check
echo "[test] cargo clippy -D warnings" >&2
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "[test] cargo test (image: $image)" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
RDS_TEST_IMAGE_DIR="$image" VHOST_VSOCK_BIN="$vhost" cargo test --workspace -- --nocapture 2>&1 | tee "$log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || exit 1
# The same API tests (real guests included) with every test manager on a Postgres database of its own.
echo "[test] the manager's API tests again on Postgres (RDS_TEST_DB=postgres)" >&2
api_tests=()
for t in crates/manager/tests/{api,e2e}_*.rs; do api_tests+=(--test "$(basename "$t" .rs)"); done
RDS_TEST_DB=postgres RDS_TEST_IMAGE_DIR="$image" VHOST_VSOCK_BIN="$vhost" \
  cargo test --workspace "${api_tests[@]}" -- --nocapture 2>&1 | tee -a "$log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || exit 1
disk
# The manager binary `cargo test --workspace` built (dev-dependency features included): the SDK and
# schemathesis scripts use it instead of building a second variant of the manager with `-p`.
export RDS_MANAGER_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/run-dat-sheesh"
echo "[test] Python SDK tests against a real manager (sdk/python)" >&2
scripts/test-sdk-python.sh "$image" "$vhost"
echo "[test] TypeScript SDK: types drift check, then its tests against a real manager (sdk/typescript)" >&2
scripts/test-sdk-typescript.sh "$image" "$vhost"
echo "[test] schemathesis against a manager with the real image (no 5xx allowed), SQLite then Postgres" >&2
scripts/schemathesis.sh "$image" "$vhost"
RDS_SCHEMATHESIS_SECONDS=${RDS_SCHEMATHESIS_SECONDS:-60} \
  scripts/schemathesis.sh "$image" "$vhost" "$RDS_TEST_DATABASE_URL"
# One closing line over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
