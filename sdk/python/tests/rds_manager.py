"""Starts the real manager binary for the tests and the benchmark, in the caller's network namespace
(scripts/test-sdk-python.sh runs both inside one of their own), and removes everything it made."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import httpx

from run_dat_sheesh import Client

REPO = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("RDS_CACHE_DIR", "/var/cache/run-dat-sheesh"))
ADMIN_PASSWORD = "sdk-python-pw-1"


class Unavailable(Exception):
    """A prerequisite is missing: the reason to skip with."""


@dataclass
class Manager:
    url: str
    key: str
    storage: Path
    proc: "subprocess.Popen[bytes]"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pids_with(marker: str) -> List[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


@contextlib.contextmanager
def run_manager(extra_env: Optional[Dict[str, str]] = None) -> Iterator[Manager]:
    if os.environ.get("RDS_SDK_NETNS") != "1":
        raise Unavailable("needs a network namespace of its own: run scripts/test-sdk-python.sh")
    binary = Path(os.environ.get("RDS_MANAGER_BIN", REPO / "target/debug/run-dat-sheesh"))
    image = Path(os.environ.get("RDS_TEST_IMAGE_DIR", CACHE / "images/current"))
    vhost = Path(os.environ.get("VHOST_VSOCK_BIN", CACHE / "tools/vhost-device-vsock-0.3.0/bin/vhost-device-vsock"))
    for need in (binary, image / "vmlinux", image / "rootfs.ext4", vhost):
        if not need.exists():
            raise Unavailable(f"{need} is missing (scripts/install-deps.sh, build-image.sh, cargo build)")
    work = Path(tempfile.mkdtemp(prefix="rds-sdk-py-"))
    work.chmod(0o711)
    port, key = _free_port(), "sdk-py-" + secrets.token_hex(12)
    env = {
        **os.environ,
        "API_KEY": key, "ADMIN_EMAIL": "a@b.c", "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "PORT": str(port), "STORAGE_ROOT": str(work / "s"), "SQLITE_PATH": str(work / "m.db"),
        "KERNEL_PATH": str(image / "vmlinux"), "BASE_ROOTFS_PATH": str(image / "rootfs.ext4"),
        "VHOST_VSOCK_BIN": str(vhost), "VSOCK_HEALTH_TIMEOUT_MS": "120000", "MAX_VMS": "4",
        "RATE_LIMIT_EXEC": "0", "RATE_LIMIT_VM_CREATE": "0", "RUST_LOG": "warn",
        **(extra_env or {}),
    }
    if (image / "initrd").exists():
        env["INITRD_PATH"] = str(image / "initrd")
    log = open(work / "manager.log", "wb")
    proc = subprocess.Popen([str(binary)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("manager did not start:\n" + (work / "manager.log").read_text()[-4000:])
            time.sleep(0.1)
        yield Manager(url, key, work / "s", proc)
    finally:
        try:
            with Client(url, key) as c:
                for sb in c.sandboxes.list():
                    sb.destroy(missing_ok=True)
        except Exception as e:  # the manager may be gone already; the kills below still clean up
            print(f"cleanup: {e}")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in _pids_with(str(work)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
