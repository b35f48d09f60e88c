#!/usr/bin/env bash
# Property-based API check (schemathesis from PyPI) against a real manager with the default image:
# every documented operation, bounded in time, with every check schemathesis has: no 5xx, only
# documented status codes and content types, responses that match their schemas, schema-valid
# requests accepted and schema-violating ones refused (the OpenAPI document states what the
# validators enforce; scripts/schemathesis.toml lists the few answers that depend on state, and
# scripts/schemathesis_hooks.py what a JSON schema cannot say). Part of scripts/test.sh.
# With a third argument, a Postgres URL whose role may create databases (scripts/test-postgres.sh),
# the manager runs on a fresh database there (dropped afterwards) instead of SQLite.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE=${RDS_CACHE_DIR:-/var/cache/run-dat-sheesh}
VENV="$CACHE/tools/schemathesis-venv"
IMAGE=${1:?usage: schemathesis.sh IMAGE_DIR VHOST_BIN}
VHOST=${2:?usage: schemathesis.sh IMAGE_DIR VHOST_BIN}
PG_ADMIN_URL=${3:-}
MAX_TIME=${RDS_SCHEMATHESIS_SECONDS:-120}
# A pinned seed makes a run reproducible (the same cases in the same order, up to MAX_TIME), so a
# red run can be replayed; RDS_SCHEMATHESIS_SEED=random explores new cases.
SEED=${RDS_SCHEMATHESIS_SEED:-33672636255295769362887436579815729637}
seed_args=(--seed "$SEED")
[[ $SEED == random ]] && seed_args=()

if [[ ! -x "$VENV/bin/schemathesis" ]]; then
  echo "[schemathesis] installing into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'schemathesis==4.32.5' >&2
fi

# After the install above (pip needs the registry): the manager sets up its bridge, TAPs and
# nftables tables, so run it in a private network namespace.
if [[ "${RDS_IN_NETNS:-}" != 1 ]]; then
  exec env RDS_IN_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up

work=$(mktemp -d)
chmod 711 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key="schemathesis-key-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
pid=""
pg_db=""
cleanup() {
  # Destroy whatever VMs the run created, then stop the manager.
  for id in $(curl -s -H "X-API-Key: $key" "http://127.0.0.1:$port/v1/vms" | python3 -c 'import json,sys; [print(v["id"]) for v in json.load(sys.stdin)]' 2>/dev/null); do
    curl -s -X DELETE -H "X-API-Key: $key" "http://127.0.0.1:$port/v1/vms/$id" >/dev/null || true
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"
  if [[ -n $pg_db ]]; then
    psql "$PG_ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null || true
  fi
}
trap cleanup EXIT
db_env=(SQLITE_PATH="$work/m.db")
if [[ -n $PG_ADMIN_URL ]]; then
  pg_db="rds_schemathesis_$$"
  psql "$PG_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $pg_db" >/dev/null
  pg_url=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$PG_ADMIN_URL" "$pg_db")
  db_env=(DB_DIALECT=postgres DATABASE_URL="$pg_url")
fi
# RDS_MANAGER_BIN: a manager binary built already (scripts/test.sh passes the one cargo test built).
manager=${RDS_MANAGER_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/run-dat-sheesh}
[[ -n ${RDS_MANAGER_BIN:-} ]] || cargo build -q -p rds-manager

env "${db_env[@]}" API_KEY=$key ADMIN_EMAIL=a@b.c ADMIN_PASSWORD=schemathesis-pw PORT=$port \
  VM_SECRET_KEY="schemathesis-vm-secret-key-$key" \
  STORAGE_ROOT="$work/s" KERNEL_PATH="$IMAGE/vmlinux" INITRD_PATH="$IMAGE/initrd" \
  BASE_ROOTFS_PATH="$IMAGE/rootfs.ext4" VHOST_VSOCK_BIN="$VHOST" VSOCK_HEALTH_TIMEOUT_MS=120000 \
  MAX_VMS=2 RATE_LIMIT_GLOBAL=0 RATE_LIMIT_VM_CREATE=0 RATE_LIMIT_EXEC=0 RATE_LIMIT_RUN_TS=0 \
  RATE_LIMIT_RUN_JS=0 RATE_LIMIT_FILES_UPLOAD=0 RATE_LIMIT_FILES_DOWNLOAD=0 RUST_LOG=warn \
  "$manager" >"$work/manager.log" 2>&1 &
pid=$!

# Start-up hashes the built-in image and migrates the database: seconds, more on a busy machine.
up=0
for _ in $(seq 1200); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && { up=1; break; }
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if ((!up)); then
  echo "[schemathesis] the manager did not come up; its log:" >&2
  tail -n 40 "$work/manager.log" >&2
  exit 1
fi
echo "[schemathesis] fuzzing http://127.0.0.1:$port for at most ${MAX_TIME}s (${db_env[0]%%=*}=${db_env[0]#*=})" >&2
SCHEMATHESIS_HOOKS="$repo/scripts/schemathesis_hooks.py" \
  "$VENV/bin/schemathesis" --config-file "$repo/scripts/schemathesis.toml" \
  run "http://127.0.0.1:$port/openapi.json" \
  -H "X-API-Key: $key" --checks all --max-time "$MAX_TIME" \
  --request-timeout 180 --suppress-health-check all --workers 1 "${seed_args[@]}"
