"""What the sync and async clients share: request descriptions, retries, error mapping, archives.
Each API call is described once as a `Req`; the two clients only differ in how they send it."""

from __future__ import annotations

import io
import json
import os
import posixpath
import tarfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import httpx

from .errors import APIConnectionError, RdsError, ServerError, error_for
from .models import ExecResult, PeerLink

DEFAULT_URL = "http://127.0.0.1:3000"
WORKSPACE = "/workspace"
# Only idempotent calls are retried, and only for failures that say nothing was done or that a
# proxy/agent hiccup may clear: a repeated POST could create a second VM or run a command twice.
RETRY_METHODS = frozenset({"GET", "DELETE"})
RETRY_STATUSES = frozenset({502, 503, 504})
RETRY_EXCEPTIONS: Tuple[Type[Exception], ...] = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)

Source = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]"]
Params = List[Tuple[str, str]]
# A peer link on create: a PeerLink, or a mapping with its fields (alias, vm_id, source_mode=).
PeerLinkLike = Union[PeerLink, Mapping[str, str]]


@dataclass
class Req:
    method: str
    path: str
    params: Optional[Params] = None
    json: Any = None
    content: Any = None
    headers: Optional[Dict[str, str]] = None
    # Read timeout for calls that may legitimately take long (a boot, a command with timeoutMs).
    read_timeout: Optional[float] = None


def settings(url: Optional[str], api_key: Optional[str]) -> Tuple[str, Optional[str]]:
    url = url or os.environ.get("RDS_URL") or DEFAULT_URL
    return url.rstrip("/"), api_key if api_key is not None else os.environ.get("RDS_API_KEY")


def headers(api_key: Optional[str]) -> Dict[str, str]:
    from . import __version__

    h = {"User-Agent": f"run-dat-sheesh-python/{__version__}"}
    if api_key:
        h["X-API-Key"] = api_key
    return h


def query(req: Req) -> Optional[httpx.QueryParams]:
    return httpx.QueryParams(tuple(req.params)) if req.params else None


def timeout_for(req: Req, default: httpx.Timeout) -> httpx.Timeout:
    if req.read_timeout is None or (default.read is not None and default.read >= req.read_timeout):
        return default
    return httpx.Timeout(default.connect, read=req.read_timeout, write=default.write, pool=default.pool)


def backoff(attempt: int) -> float:
    return min(0.25 * 2.0**attempt, 2.0)


def retryable(req: Req, attempt: int, max_retries: int) -> bool:
    return req.method in RETRY_METHODS and attempt < max_retries


def raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    message = resp.reason_phrase or "HTTP error"
    request_id = resp.headers.get("x-request-id")
    try:
        body = resp.json()
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            message = body["message"]
            request_id = body.get("requestId") or request_id
    except ValueError:
        if resp.text:
            message = resp.text[:2048]
    raise error_for(resp.status_code, message, request_id, resp.headers.get("retry-after"))


def connection_error(exc: Exception) -> RdsError:
    return APIConnectionError(f"{type(exc).__name__}: {exc}")


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def drop_none(d: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# --- VMs -----------------------------------------------------------------------------------------


def create_vm(
    cpu: int,
    mem_mb: int,
    image_id: Optional[str],
    disk_size_mb: Optional[int],
    allow_ips: Optional[Sequence[str]],
    outbound_internet: Optional[bool],
    timeout_sec: Optional[int],
    timeout_action: Optional[str],
    metadata: Optional[Mapping[str, str]],
    snapshot_id: Optional[str] = None,
    secret_env: Optional[Mapping[str, str]] = None,
    peer_links: Optional[Sequence[PeerLinkLike]] = None,
) -> Req:
    body = drop_none(
        {
            "cpu": cpu,
            "memMb": mem_mb,
            "imageId": image_id,
            "diskSizeMb": disk_size_mb,
            "allowIps": list(allow_ips) if allow_ips is not None else None,
            "outboundInternet": outbound_internet,
            "timeoutSec": timeout_sec,
            "timeoutAction": timeout_action,
            "metadata": dict(metadata) if metadata is not None else None,
            "userOverlaySnapshotId": snapshot_id,
            # Write-only: sealed by the manager, never shown again (docs/secret-env.md).
            "secretEnv": [f"{k}={v}" for k, v in secret_env.items()] if secret_env else None,
            "peerLinks": [peer_link(p).to_json() for p in peer_links] if peer_links else None,
        }
    )
    # The answer comes once the guest is RUNNING: a cold boot under emulation takes a while.
    return Req("POST", "/v1/vms", json=body, read_timeout=300.0)


def peer_link(link: PeerLinkLike) -> PeerLink:
    if isinstance(link, PeerLink):
        return link
    if isinstance(link, Mapping):
        try:
            return PeerLink(**link)
        except TypeError as e:
            raise ValueError(f"a peer link takes alias, vm_id and source_mode: {dict(link)!r}") from e
    raise TypeError(f"a peer link is a PeerLink or a mapping, not {type(link).__name__}")


def list_vms(state: Union[None, str, Sequence[str]], metadata: Optional[Mapping[str, str]]) -> Req:
    params: Params = []
    if state is not None:
        params += [("state", s) for s in ([state] if isinstance(state, str) else state)]
    params += [(f"metadata.{k}", v) for k, v in (metadata or {}).items()]
    return Req("GET", "/v1/vms", params=params)


def exec_req(cmd: str, cwd: Optional[str], env: Optional[Mapping[str, str]], timeout_ms: Optional[int]) -> Req:
    body = drop_none({"cmd": cmd, "cwd": cwd, "env": dict(env) if env is not None else None, "timeoutMs": timeout_ms})
    return Req("POST", "/exec", json=body, read_timeout=_run_timeout(timeout_ms))


def run_req(
    kind: str,
    code: Optional[str],
    path: Optional[str],
    args: Optional[Sequence[str]],
    env: Optional[Mapping[str, str]],
    flags: Optional[Sequence[str]],
    timeout_ms: Optional[int],
) -> Req:
    if (code is None) == (path is None):
        raise ValueError("pass exactly one of code= and path=")
    body = drop_none(
        {
            "code": code,
            "path": path,
            "args": list(args) if args is not None else None,
            # run-ts/run-js take env as KEY=value strings, unlike exec.
            "env": [f"{k}={v}" for k, v in env.items()] if env is not None else None,
            ("denoFlags" if kind == "run-ts" else "nodeFlags"): list(flags) if flags is not None else None,
            "timeoutMs": timeout_ms,
        }
    )
    return Req("POST", f"/{kind}", json=body, read_timeout=_run_timeout(timeout_ms))


def _run_timeout(timeout_ms: Optional[int]) -> float:
    return (timeout_ms or 30_000) / 1000 + 60.0


def logs_req(type: Optional[str], tail: Optional[int]) -> Req:
    return Req("GET", "/logs", params=_params(type=type, tail=tail))


def exec_logs_req(limit: Optional[int], type: Optional[str], before: Optional[str]) -> Req:
    return Req("GET", "/exec-logs", params=_params(limit=limit, type=type, before=before))


def timeout_req(seconds: Optional[int], action: Optional[str]) -> Req:
    body: Dict[str, Any] = {"timeoutSec": seconds}
    if action is not None:
        body["timeoutAction"] = action
    return Req("POST", "/timeout", json=body)


def peers_sync_req() -> Req:
    # Rebuilds /workspace/peers from every provider: a download and a check per provider.
    return Req("POST", "/peers/sync", read_timeout=300.0)


def peer_mode_req(alias: str, mode: str) -> Req:
    path = f"/peers/{urllib.parse.quote(alias, safe='')}"
    return Req("PATCH", path, json={"sourceMode": mode}, read_timeout=300.0)


def _params(**kw: Any) -> Params:
    return [(k, str(v)) for k, v in kw.items() if v is not None]


# --- streamed exec, run-ts and run-js (docs/api.md "Streaming") -----------------------------------

NDJSON = "application/x-ndjson"
# Gets each chunk of output as text, as it arrives; in the async client it may return an awaitable.
OutputCallback = Callable[[str], Any]
# (kind, text) of output chunks to hand to the callbacks, in order.
Chunks = List[Tuple[str, str]]


def is_ndjson(resp: httpx.Response) -> bool:
    return resp.headers.get("content-type", "").split(";")[0].strip().lower() == NDJSON


def callback_for(kind: str, on_stdout: Optional[OutputCallback], on_stderr: Optional[OutputCallback]) -> Optional[OutputCallback]:
    return on_stdout if kind == "stdout" else on_stderr


class OutputStream:
    """Reads a streamed answer: JSON lines fed as the bytes arrive. `feed` answers the output chunks
    that completed lines carried; `result` builds the buffered call's ExecResult from the exit line
    and all the output. An `error` line raises ServerError (status None: it came inside a 200)."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._out: List[str] = []
        self._err: List[str] = []
        self._exit: Optional[Dict[str, Any]] = None

    def feed(self, chunk: bytes) -> Chunks:
        self._pending += chunk
        end = self._pending.rfind(b"\n")
        if end < 0:
            return []
        lines = bytes(self._pending[:end]).split(b"\n")
        del self._pending[: end + 1]
        return [c for line in lines for c in self._line(line)]

    def end(self) -> Chunks:
        """The stream is over: a last line without its newline is read too."""
        line, self._pending = bytes(self._pending), bytearray()
        return self._line(line)

    def _line(self, line: bytes) -> Chunks:
        if not line.strip() or self._exit is not None:
            return []
        try:
            ev = json.loads(line)
        except ValueError as e:
            raise RdsError(f"a streamed line is not JSON: {line[:200]!r}") from e
        kind = ev.get("type") if isinstance(ev, dict) else None
        if kind in ("stdout", "stderr"):
            text = ev.get("data") or ""
            (self._out if kind == "stdout" else self._err).append(text)
            return [(kind, text)] if text else []
        if kind == "exit":
            self._exit = ev
        elif kind == "error":
            raise ServerError(str(ev.get("message") or "the call could not finish"))
        # Lines of other types (a later release's) are skipped.
        return []

    def result(self) -> ExecResult:
        if self._exit is None:
            raise APIConnectionError("the streamed answer ended before the command's exit")
        j = {k: v for k, v in self._exit.items() if k != "type"}
        j["stdout"], j["stderr"] = "".join(self._out), "".join(self._err)
        return ExecResult.from_json(j)

    @staticmethod
    def buffered(j: Any) -> Tuple[ExecResult, Chunks]:
        """A manager without streaming answers the buffered reply: its output in one chunk each."""
        r = ExecResult.from_json(j)
        return r, [(k, t) for k, t in (("stdout", r.stdout), ("stderr", r.stderr)) if t]


# --- files ---------------------------------------------------------------------------------------


def remote_abs(path: str) -> str:
    return posixpath.normpath(path if path.startswith("/") else posixpath.join(WORKSPACE, path))


def upload_req(dest: str, source: Source) -> Req:
    """bytes → a file at `dest`; a local file → a file at `dest`; a local directory → its contents
    merged into the directory `dest`."""
    dest = remote_abs(dest)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            info = tarfile.TarInfo(posixpath.basename(dest))
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
            target = posixpath.dirname(dest)
        else:
            local = Path(source)
            if local.is_dir():
                _add_tree(tar, local)
                target = dest
            elif local.is_file():
                tar.add(str(local), arcname=posixpath.basename(dest), recursive=False, filter=_plain)
                target = posixpath.dirname(dest)
            else:
                raise FileNotFoundError(f"no such file or directory: {local}")
    return Req(
        "POST",
        "/files/upload",
        params=[("dest", target)],
        content=buf.getvalue(),
        headers={"Content-Type": "application/gzip"},
        read_timeout=120.0,
    )


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_tree(tar: tarfile.TarFile, root: Path) -> None:
    # The agent refuses links and special files: fail here with the local name instead.
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink() or not (p.is_dir() or p.is_file()):
                raise ValueError(f"cannot upload {p}: only regular files and directories are allowed")
            tar.add(str(p), arcname=rel, recursive=False, filter=_plain)


def download_req(path: str) -> Req:
    return Req("GET", "/files/download", params=[("path", path)], read_timeout=300.0)


def single_file(archive: bytes, path: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name not in (".", "./")]
        # A file comes under its base name; a directory's contents come as ./entries.
        name = posixpath.basename(posixpath.normpath(path))
        if len(members) != 1 or not members[0].isfile() or members[0].name != name:
            raise ValueError(f"{path} is not a single file; use download_to() or download_archive()")
        f = tar.extractfile(members[0])
        assert f is not None
        return f.read()


def extract(archive: bytes, local_dir: Union[str, "os.PathLike[str]"]) -> Path:
    out = Path(local_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for m in tar.getmembers():
            # Archives come from a sandbox: never let one write outside local_dir.
            target = (root / m.name).resolve()
            if target != root and root not in target.parents:
                raise ValueError(f"archive entry escapes {root}: {m.name}")
            if m.issym() or m.islnk():
                continue
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif m.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                assert src is not None
                target.write_bytes(src.read())
                os.chmod(target, 0o755 if m.mode & 0o111 else 0o644)
    return out


# --- images --------------------------------------------------------------------------------------

_PART_TYPES = {"kernel": "application/octet-stream", "rootfs": "application/octet-stream",
               "initrd": "application/octet-stream", "bundle": "application/zip"}


def image_part(image_id: str, part: str, source: Source, chunks: Any = None) -> Req:
    """`chunks` turns a path into the body the caller's transport streams (sync or async)."""
    h = {"Content-Type": _PART_TYPES[part]}
    if isinstance(source, (bytes, bytearray, memoryview)):
        content: Any = bytes(source)
    else:
        local = Path(source)
        h["Content-Length"] = str(local.stat().st_size)
        content = chunks(local)
    return Req("PUT", f"/v1/images/{image_id}/{part}", content=content, headers=h, read_timeout=600.0)


def file_chunks(path: Path, size: int = 1 << 20) -> Any:
    with open(path, "rb") as f:
        while True:
            b = f.read(size)
            if not b:
                return
            yield b
