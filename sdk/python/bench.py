"""SDK overhead per call: `exec true` through Sandbox.exec beside the same request sent with raw
httpx, on one VM, interleaved so that both see the same guest. Run by hand:

    scripts/test-sdk-python.sh --bench        # starts a manager in a namespace of its own
    RDS_URL=... RDS_API_KEY=... python sdk/python/bench.py   # against a running manager
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List

import httpx

from run_dat_sheesh import Client

N = int(os.environ.get("RDS_BENCH_CALLS", "50"))


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def pct(v: List[float], p: float) -> float:
    s = sorted(v)
    return s[round((len(s) - 1) * p)]


def bench(url: str, key: str) -> None:
    with Client(url, key) as client, httpx.Client(base_url=url, headers={"X-API-Key": key}) as raw:
        sb = client.sandboxes.create(cpu=1, mem_mb=256)
        try:
            path = f"/v1/vms/{sb.id}/exec"

            def raw_call() -> None:
                r = raw.post(path, json={"cmd": "true"})
                r.raise_for_status()
                assert r.json()["exitCode"] == 0

            def sdk_call() -> None:
                assert sb.exec("true").exit_code == 0

            for _ in range(5):  # warm both connections and the guest's exec path
                raw_call()
                sdk_call()
            raw_ms, sdk_ms = [], []
            for _ in range(N):
                raw_ms.append(timed(raw_call))
                sdk_ms.append(timed(sdk_call))
        finally:
            sb.destroy()
    for label, v in (("raw httpx", raw_ms), ("SDK Sandbox.exec", sdk_ms)):
        print(f"{label:<17} p50 {pct(v, 0.5):7.2f} ms  p90 {pct(v, 0.9):7.2f} ms  (n={len(v)})")
    print(f"SDK overhead      p50 {pct(sdk_ms, 0.5) - pct(raw_ms, 0.5):+7.2f} ms  "
          f"(median of paired differences {statistics.median(s - r for s, r in zip(sdk_ms, raw_ms)):+.2f} ms)")


def bench_offline() -> None:
    """The client-side cost alone: both clients against an in-process transport with a canned answer."""
    body = b'{"exitCode":0,"stdout":"","stderr":"","stdoutTruncated":false,"stderrTruncated":false,"timedOut":false,"durationMs":1}'
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=body, headers={"content-type": "application/json"}))
    vm = {"id": "00000000-0000-4000-8000-000000000000", "state": "RUNNING"}
    from run_dat_sheesh import Sandbox
    from run_dat_sheesh.models import VM

    with httpx.Client(base_url="http://x", transport=transport) as raw, \
            Client("http://x", "k", http_client=httpx.Client(base_url="http://x", transport=transport)) as c:
        sb = Sandbox(c, VM.from_json(vm))
        raw_ms = [timed(lambda: raw.post(f"/v1/vms/{vm['id']}/exec", json={"cmd": "true"}).json()) for _ in range(2000)]
        sdk_ms = [timed(lambda: sb.exec("true")) for _ in range(2000)]
    print(f"in-process (n=2000): raw httpx p50 {pct(raw_ms, 0.5) * 1000:.0f} µs, "
          f"SDK p50 {pct(sdk_ms, 0.5) * 1000:.0f} µs, overhead {(pct(sdk_ms, 0.5) - pct(raw_ms, 0.5)) * 1000:+.0f} µs")


def main() -> None:
    bench_offline()
    url, key = os.environ.get("RDS_URL"), os.environ.get("RDS_API_KEY")
    if url and key:
        bench(url, key)
        return
    sys.path.insert(0, str(Path(__file__).parent / "tests"))
    from rds_manager import run_manager

    with run_manager() as m:
        bench(m.url, m.key)


if __name__ == "__main__":
    main()
