#!/usr/bin/env bash
# Exec overhead (docs/benchmarks.md "Interactive"): starts the manager built by `cargo build` in a
# private network namespace with IMAGE_DIR (default: the cached default image), boots one
# 1 vCPU / 512 MiB VM and prints p50/p90 of N (40) calls each: the raw hybrid-vsock round trip to
# the agent (`GET /health`), `exec` of `true` through the API, and the agent's own `durationMs`;
# then 10 streamed execs of `echo first; sleep 1; echo second`: time to the first line and to the
# end. `GAP` seconds (0.4) pass between exec calls. Numbers only, nothing asserted.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE=${RDS_CACHE_DIR:-/var/cache/run-dat-sheesh}
IMG=${1:-$CACHE/images/current}
N=${2:-40}
export IMG N GAP=${GAP:-0.4} BIN=${RDS_MANAGER_BIN:-$repo/target/debug/run-dat-sheesh}
export VHOST=${VHOST_VSOCK_BIN:-$(ls -d "$CACHE"/tools/vhost-device-vsock-*/bin/vhost-device-vsock | tail -n 1)}
exec unshare -n bash -c '
set -euo pipefail
ip link set lo up
w=$(mktemp -d); chmod 711 "$w"
export K=bench-key-0123456789abcdef PORT=39998
API_KEY=$K ADMIN_EMAIL=a@b.c ADMIN_PASSWORD=bench-password-123 STORAGE_ROOT=$w/s SQLITE_PATH=$w/m.db \
  KERNEL_PATH=$IMG/vmlinux INITRD_PATH=$IMG/initrd BASE_ROOTFS_PATH=$IMG/rootfs.ext4 \
  VHOST_VSOCK_BIN=$VHOST WARM_POOL_MAX_VMS=0 ENABLE_SNAPSHOTS=false RUST_LOG=warn "$BIN" > "$w/log" 2>&1 &
p=$!
# VMs outlive their manager by design: the VM goes first, then the manager.
trap "[ -n \"\${ID:-}\" ] && curl -s -X DELETE -H \"X-API-Key: \$K\" http://127.0.0.1:\$PORT/v1/vms/\$ID; kill $p 2>/dev/null; wait $p 2>/dev/null; rm -rf $w" EXIT
for _ in $(seq 300); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
export ID=$(curl -sf -H "X-API-Key: $K" -H "Content-Type: application/json" -d "{\"cpu\":1,\"memMb\":512}" \
  http://127.0.0.1:$PORT/v1/vms | python3 -c "import json,sys; print(json.load(sys.stdin)[\"id\"])")
export SOCK=$(find "$w/s" -name v.sock | head -n 1)
python3 - <<"PY"
import json, os, socket, time, urllib.request
n, gap, sock = int(os.environ["N"]), float(os.environ["GAP"]), os.environ["SOCK"]
url = "http://127.0.0.1:%s/v1/vms/%s/exec" % (os.environ["PORT"], os.environ["ID"])
def q(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(len(v) * p))]
def health():
    s = socket.socket(socket.AF_UNIX); s.connect(sock); s.sendall(b"CONNECT 8080\n")
    line = b""
    while not line.endswith(b"\n"): line += s.recv(1)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    reply = b""
    while True:
        c = s.recv(65536)
        if not c: break
        reply += c
    return json.loads(reply.split(b"\r\n\r\n", 1)[1])
def execute():
    req = urllib.request.Request(url, data=b"{\"cmd\":\"true\"}",
        headers={"X-API-Key": os.environ["K"], "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
for _ in range(3):
    execute(); time.sleep(gap)
raw, api, agent = [], [], []
for _ in range(n):
    t = time.perf_counter(); health(); raw.append((time.perf_counter() - t) * 1000)
for _ in range(n):
    t = time.perf_counter(); r = execute(); api.append((time.perf_counter() - t) * 1000)
    agent.append(r["durationMs"]); time.sleep(gap)
first, whole = [], []
for _ in range(10):
    req = urllib.request.Request(url, data=b"{\"cmd\":\"echo first; sleep 1; echo second\"}",
        headers={"X-API-Key": os.environ["K"], "Content-Type": "application/json",
                 "Accept": "application/x-ndjson"})
    t = time.perf_counter(); r = urllib.request.urlopen(req); r.readline()
    first.append((time.perf_counter() - t) * 1000); r.read(); whole.append((time.perf_counter() - t) * 1000)
    time.sleep(gap)
warm = health().get("warmExecs")
print(f"raw vsock GET /health: p50 {q(raw, .5):.2f} ms, p90 {q(raw, .9):.2f} ms")
print(f"exec true via the API: p50 {q(api, .5):.1f} ms, p90 {q(api, .9):.1f} ms (gap {gap} s)")
print(f"streamed exec: first line after p50 {q(first, .5):.1f} ms, whole call p50 {q(whole, .5):.0f} ms")
print(f"agent durationMs: p50 {q(agent, .5)}, p90 {q(agent, .9)}; warm shells used: {warm}")
PY
'
