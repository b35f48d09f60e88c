#!/usr/bin/env bash
# Starts the Postgres server the DB tests run against, idempotently, and prints its URL last (for
# RDS_TEST_DATABASE_URL). It is a private cluster of the Debian `postgresql` package's binaries under
# $RDS_CACHE_DIR/pg, run by the `postgres` user: Unix socket only (no TCP port, so it cannot clash
# with a system cluster), trust authentication on a socket directory only root and postgres can
# enter, durability off (test data only). The role `rds_test` may create databases; each test makes
# its own and drops it (rds_testkit::TestPostgres). A second run only checks that it is up.
# Needs root and scripts/install-deps.sh.
set -euo pipefail

CACHE=${RDS_CACHE_DIR:-/var/cache/run-dat-sheesh}
PG="$CACHE/pg"
DATA="$PG/data"
SOCK="$PG/run"
ROLE=rds_test

log() { printf '[test-postgres] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root"
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[[ -n $bindir && -x $bindir/pg_ctl ]] || die "no PostgreSQL server binaries (run scripts/install-deps.sh)"
id postgres >/dev/null 2>&1 || die "no postgres user (the postgresql package creates it)"
as_pg() { runuser -u postgres -- "$@"; }
psql_admin() { "$bindir/psql" -h "$SOCK" -U postgres -d postgres -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

# The server must not inherit this script's descriptors beyond 0-2 (pg_ctl redirects those): a
# daemon holding the lock below, or a CI log pipe, would block the next run or hang the CI step.
start_server() (
  for fd in $(ls "/proc/$BASHPID/fd"); do
    if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
  exec runuser -u postgres -- "$bindir/pg_ctl" -D "$DATA" -l "$PG/server.log" -w -t 60 start \
    </dev/null >/dev/null
)

mkdir -p "$PG"
exec 9>"$PG/.lock"
flock 9 # concurrent runs wait for the first to finish starting the server

if ! "$bindir/pg_isready" -q -h "$SOCK" -U postgres 2>/dev/null; then
  chown postgres:postgres "$PG"
  chmod 0700 "$PG"
  as_pg test -x "$PG" || die "the postgres user cannot enter $PG (a parent directory is closed)"
  if [[ ! -s $DATA/PG_VERSION ]]; then
    log "initdb $DATA"
    rm -rf "$DATA"
    as_pg "$bindir/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --no-locale >/dev/null
    cat >>"$DATA/postgresql.conf" <<EOF
# run-dat-sheesh test cluster (scripts/test-postgres.sh)
listen_addresses = ''
unix_socket_directories = '$SOCK'
unix_socket_permissions = 0700
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  fi
  install -d -m 0700 -o postgres -g postgres "$SOCK"
  # A postmaster.pid left by a killed container may name a pid now used by something else.
  if [[ -s $DATA/postmaster.pid ]]; then
    pid=$(head -n 1 "$DATA/postmaster.pid")
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == postgres ]] || rm -f "$DATA/postmaster.pid"
  fi
  log "starting the server ($("$bindir/postgres" --version))"
  start_server || { tail -n 20 "$PG/server.log" >&2; die "server did not start (log: $PG/server.log)"; }
fi

if [[ $(psql_admin -c "SELECT count(*) FROM pg_roles WHERE rolname = '$ROLE'") == 0 ]]; then
  psql_admin -c "CREATE ROLE $ROLE LOGIN CREATEDB"
fi
if [[ $(psql_admin -c "SELECT count(*) FROM pg_database WHERE datname = '$ROLE'") == 0 ]]; then
  psql_admin -c "CREATE DATABASE $ROLE OWNER $ROLE"
fi
log "up on $SOCK"
echo "postgres://$ROLE@localhost/$ROLE?host=$SOCK"
