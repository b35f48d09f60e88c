#!/usr/bin/env bash
# Control-plane throughput: wrk against a release manager (no VMs) in a private network namespace.
# Prints req/s and latency percentiles for an authenticated `GET /v1/vms` (master key, a DB key
# cached and uncached) and for a 401, login req/s, and the SSE fan-out of activity to 100 streams.
# Usage (root): scripts/bench-http.sh [--otlp]   — needs `wrk` (apt) and a built image for the startup
# check. With --otlp the manager exports its spans to a minimal OTLP/HTTP sink (python) in the same
# namespace, to show what trace export costs.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
if [[ "${1:-}" != "--in-netns" ]]; then
  cargo build -q --release -p rds-manager
  exec unshare -n "$0" --in-netns "$@"
fi
otlp=${2:-}
ip link set lo up
image=/var/cache/run-dat-sheesh/images/current
work=$(mktemp -d); chmod 711 "$work"
otel=()
if [[ $otlp == --otlp ]]; then
  # Accepts every export and counts the requests and bytes it got.
  python3 - "$work/otlp.count" <<'PY' &
import http.server, sys
count = [0, 0]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("content-length", 0)); self.rfile.read(n)
        count[0] += 1; count[1] += n
        open(sys.argv[1], "w").write(f"{count[0]} exports, {count[1]} bytes\n")
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 4318), H).serve_forever()
PY
  sink=$!
  otel=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318)
fi
env "${otel[@]}" API_KEY=bench-key-0123456789 ADMIN_EMAIL=a@b.c ADMIN_PASSWORD=bench-password-1 PORT=3999 \
  STORAGE_ROOT="$work/s" SQLITE_PATH="$work/m.db" KERNEL_PATH="$image/vmlinux" INITRD_PATH="$image/initrd" \
  BASE_ROOTFS_PATH="$image/rootfs.ext4" VHOST_VSOCK_BIN=/var/cache/run-dat-sheesh/tools/vhost-device-vsock-0.3.0/bin/vhost-device-vsock \
  RATE_LIMIT_GLOBAL=0 RATE_LIMIT_LOGIN=0 RUST_LOG=error target/release/run-dat-sheesh >"$work/log" 2>&1 &
pid=$!
trap 'kill $pid ${sink:-} 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf localhost:3999/healthz >/dev/null && break; sleep 0.1; done
echo "GET /v1/vms with a valid key:"
wrk -t2 -c16 -d10s --latency -H 'X-API-Key: bench-key-0123456789' http://127.0.0.1:3999/v1/vms | grep -E "Requests/sec|50%|99%"
echo "GET /v1/vms without a key (401):"
wrk -t2 -c16 -d10s --latency http://127.0.0.1:3999/v1/vms | grep -E "Requests/sec|50%|99%"
base=http://127.0.0.1:3999
login='{"email":"a@b.c","password":"bench-password-1"}'
cookie=$(curl -sf -D - -o /dev/null -H 'Content-Type: application/json' -d "$login" $base/auth/login \
  | sed -n 's/^[Ss]et-[Cc]ookie: \(rds_session=[^;]*\).*/\1/p')
csrf=$(curl -sf -H "Cookie: $cookie" $base/auth/me | jq -r .csrfToken)
dbkey=$(curl -sf -H "Cookie: $cookie" -H "X-RDS-CSRF: $csrf" -H 'Content-Type: application/json' \
  -d '{"name":"bench"}' $base/v1/admin/api-keys | jq -r .apiKey)
echo "GET /v1/vms with a DB key (verified once, then cached):"
wrk -t2 -c16 -d10s --latency -H "X-API-Key: $dbkey" $base/v1/vms | grep -E "Requests/sec|50%|99%"
# Every request a new secret under the key's real prefix: a DB lookup and an argon2 verification
# each (the answer is 401; a right secret costs the same to verify).
cat >"$work/uncached.lua" <<LUA
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
request = function()
  local t = {}
  for i = 1, 32 do local n = math.random(1, #chars); t[i] = chars:sub(n, n) end
  wrk.headers["X-API-Key"] = "${dbkey:0:16}_" .. table.concat(t)
  return wrk.format("GET", "/v1/vms")
end
LUA
rss() { awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$pid/status; }
echo "manager RSS before the uncached verifications: $(rss)"
echo "GET /v1/vms with uncached DB-key verifications (argon2id, 2 at a time):"
wrk -t2 -c16 -d10s --latency -s "$work/uncached.lua" $base/v1/vms | grep -E "Requests/sec|50%|99%|Non-2xx"
# Before the login load: each login records an activity event, and the writer's backlog would
# delay the events measured here.
echo "SSE:"
python3 scripts/bench-sse.py $base "$cookie" bench-key-0123456789 $pid 100 20
cat >"$work/login.lua" <<LUA
wrk.method = "POST"
wrk.body = '$login'
wrk.headers["Content-Type"] = "application/json"
LUA
echo "manager RSS after the uncached verifications: $(rss)"
echo "POST /auth/login (plain ADMIN_PASSWORD; each success stores a session):"
wrk -t2 -c16 -d10s --latency -s "$work/login.lua" $base/auth/login | grep -E "Requests/sec|50%|99%"
echo "manager RSS after the load: $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$pid/status)"
if [[ $otlp == --otlp ]]; then
  kill -TERM $pid; wait $pid 2>/dev/null || true
  echo "OTLP sink received: $(cat "$work/otlp.count" 2>/dev/null || echo nothing)"
fi
