#!/usr/bin/env python3
"""SSE fan-out of the manager's activity stream (used by scripts/bench-http.sh).

Opens N streams on /v1/admin/events with an admin session cookie, waits for `: connected` on all,
prints the manager's RSS, then records E events (POST /v1/images with the master key) one at a time
and measures, per stream, the time from sending the POST until that stream has the event's frame.

Usage: bench-sse.py <base-url> <cookie> <api-key> <manager-pid> [streams=100] [events=20]
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

base, cookie, key, pid = sys.argv[1:5]
streams = int(sys.argv[5]) if len(sys.argv) > 5 else 100
events = int(sys.argv[6]) if len(sys.argv) > 6 else 20
url = urllib.parse.urlparse(base)


def rss_mib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


arrivals = {}  # image id -> list of arrival times (one per stream)
lock = threading.Lock()
connected = threading.Barrier(streams + 1)


def reader():
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    conn.request("GET", "/v1/admin/events", headers={"Cookie": cookie})
    resp = conn.getresponse()
    first = resp.readline()  # the response is chunked: read through HTTPResponse, not its socket
    if resp.status != 200 or not first.startswith(b": connected"):
        connected.abort()
        raise SystemExit(f"stream refused: {resp.status} {first!r}")
    connected.wait()
    seen = 0
    while seen < events:
        line = resp.readline()
        if not line:
            return
        if line.startswith(b"data: "):
            now = time.monotonic()
            entity = json.loads(line[6:])["entityId"]
            with lock:
                arrivals.setdefault(entity, []).append(now)
            seen += 1


threads = [threading.Thread(target=reader, daemon=True) for _ in range(streams)]
rss_before = rss_mib()
for t in threads:
    t.start()
connected.wait()
print(f"{streams} open streams: manager RSS {rss_before:.1f} MiB before, {rss_mib():.1f} MiB with them")

latencies = []
api = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
for i in range(events):
    body = json.dumps({"name": f"sse-{i}", "description": "fan-out"})
    sent = time.monotonic()
    api.request("POST", "/v1/images", body=body,
                headers={"X-API-Key": key, "Content-Type": "application/json"})
    resp = api.getresponse()
    image = json.loads(resp.read())["id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with lock:
            got = list(arrivals.get(image, []))
        if len(got) == streams:
            break
        time.sleep(0.001)
    latencies += [(t - sent) * 1000 for t in got]
    time.sleep(0.05)

latencies.sort()
def pct(p):
    return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]
print(f"fan-out of {events} events to {streams} streams ({len(latencies)} deliveries): "
      f"p50 {pct(50):.1f} ms, p99 {pct(99):.1f} ms, max {latencies[-1]:.1f} ms "
      f"(from sending the POST to the frame on the stream)")
print(f"manager RSS after: {rss_mib():.1f} MiB")
