"""The synchronous client: `Client`, its `sandboxes`, `images` and `snapshots`, and `Sandbox`."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Type, TypeVar, Union

import httpx

from . import _core as core
from ._core import Req, Source
from .errors import NotFoundError
from .models import VM, ExecLogPage, ExecResult, Image, Logs, Snapshot

T = TypeVar("T")
PathLike = Union[str, "os.PathLike[str]"]


class Client:
    """Talks to one manager. `url` and `api_key` default to the env vars RDS_URL and RDS_API_KEY."""

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 2,
        http_client: Optional[httpx.Client] = None,
    ) -> None:
        self.url, self.api_key = core.settings(url, api_key)
        self.max_retries = max_retries
        self._timeout = httpx.Timeout(timeout)
        self._http = http_client or httpx.Client(base_url=self.url, timeout=self._timeout)
        self._headers = core.headers(self.api_key)
        self.sandboxes = Sandboxes(self)
        self.images = Images(self)
        self.snapshots = Snapshots(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, req: Req) -> httpx.Response:
        headers = {**self._headers, **(req.headers or {})}
        attempt = 0
        while True:
            try:
                resp = self._http.request(
                    req.method, req.path, params=core.query(req), json=req.json, content=req.content,
                    headers=headers, timeout=core.timeout_for(req, self._timeout),
                )
            except core.RETRY_EXCEPTIONS as e:
                if not core.retryable(req, attempt, self.max_retries):
                    raise core.connection_error(e) from e
            except httpx.TransportError as e:
                raise core.connection_error(e) from e
            else:
                if resp.status_code not in core.RETRY_STATUSES or not core.retryable(req, attempt, self.max_retries):
                    core.raise_for(resp)
                    return resp
            core.sleep(core.backoff(attempt))
            attempt += 1

    def _json(self, req: Req, parse: Callable[[Any], T]) -> T:
        return parse(self._send(req).json())

    def _stream(
        self, req: Req, on_stdout: Optional[core.OutputCallback], on_stderr: Optional[core.OutputCallback]
    ) -> ExecResult:
        """A streamed exec/run: the callbacks get the output as it arrives. Never retried (a POST);
        leaving early (a callback raised) hangs up, which kills the command."""
        headers = {**self._headers, **(req.headers or {}), "Accept": core.NDJSON}
        out = core.OutputStream()
        try:
            with self._http.stream(
                req.method, req.path, params=core.query(req), json=req.json, content=req.content,
                headers=headers, timeout=core.timeout_for(req, self._timeout),
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    core.raise_for(resp)
                if not core.is_ndjson(resp):
                    resp.read()
                    result, chunks = core.OutputStream.buffered(resp.json())
                    _deliver(chunks, on_stdout, on_stderr)
                    return result
                for data in resp.iter_bytes():
                    _deliver(out.feed(data), on_stdout, on_stderr)
                _deliver(out.end(), on_stdout, on_stderr)
        except httpx.TransportError as e:
            raise core.connection_error(e) from e
        return out.result()


def _deliver(chunks: core.Chunks, on_stdout: Optional[core.OutputCallback], on_stderr: Optional[core.OutputCallback]) -> None:
    for kind, text in chunks:
        cb = core.callback_for(kind, on_stdout, on_stderr)
        if cb is not None:
            cb(text)


class Sandboxes:
    def __init__(self, client: Client) -> None:
        self._c = client

    def create(
        self,
        cpu: int = 1,
        mem_mb: int = 256,
        *,
        image_id: Optional[str] = None,
        disk_size_mb: Optional[int] = None,
        allow_ips: Optional[Sequence[str]] = None,
        outbound_internet: Optional[bool] = None,
        timeout_sec: Optional[int] = None,
        timeout_action: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        snapshot_id: Optional[str] = None,
        secret_env: Optional[Mapping[str, str]] = None,
        peer_links: Optional[Sequence[core.PeerLinkLike]] = None,
    ) -> "Sandbox":
        """Creates a VM and returns once it is RUNNING. `snapshot_id` restores a user snapshot;
        `peer_links` links it to RUNNING provider VMs (PeerLink or {"alias", "vm_id", "source_mode"})."""
        req = core.create_vm(cpu, mem_mb, image_id, disk_size_mb, allow_ips, outbound_internet,
                             timeout_sec, timeout_action, metadata, snapshot_id, secret_env, peer_links)
        return Sandbox(self._c, self._c._json(req, VM.from_json))

    def list(
        self, state: Union[None, str, Sequence[str]] = None, metadata: Optional[Mapping[str, str]] = None
    ) -> List["Sandbox"]:
        vms = self._c._json(core.list_vms(state, metadata), lambda j: [VM.from_json(v) for v in j])
        return [Sandbox(self._c, v) for v in vms]

    def get(self, vm_id: str) -> "Sandbox":
        return Sandbox(self._c, self._c._json(Req("GET", f"/v1/vms/{vm_id}"), VM.from_json))


class Sandbox:
    """One VM. As a context manager it destroys the VM on exit, also when the body raised."""

    def __init__(self, client: Client, info: VM, *, owns_client: bool = False) -> None:
        self.client = client
        self.info = info
        self.files = Files(self)
        self._owns_client = owns_client

    @classmethod
    def create(
        cls, *, client: Optional[Client] = None, url: Optional[str] = None, api_key: Optional[str] = None,
        **kwargs: Any,
    ) -> "Sandbox":
        """`Client(url, api_key).sandboxes.create(**kwargs)`; a client made here is closed by destroy()."""
        return cls._with_client(client, url, api_key, lambda c: c.sandboxes.create(**kwargs))

    @classmethod
    def restore(
        cls, snapshot_id: str, *, client: Optional[Client] = None, url: Optional[str] = None,
        api_key: Optional[str] = None, **kwargs: Any,
    ) -> "Sandbox":
        """A new VM from a user snapshot; cpu and mem_mb default to the snapshot's."""
        def make(c: Client) -> "Sandbox":
            if "cpu" not in kwargs or "mem_mb" not in kwargs:
                snap = c.snapshots.get(snapshot_id)
                kwargs.setdefault("cpu", snap.cpu or 1)
                kwargs.setdefault("mem_mb", snap.mem_mb or 256)
            return c.sandboxes.create(snapshot_id=snapshot_id, **kwargs)
        return cls._with_client(client, url, api_key, make)

    @classmethod
    def _with_client(
        cls, client: Optional[Client], url: Optional[str], api_key: Optional[str],
        make: Callable[[Client], "Sandbox"],
    ) -> "Sandbox":
        own = client is None
        c = client or Client(url, api_key)
        try:
            sb = make(c)
        except BaseException:
            if own:
                c.close()
            raise
        sb._owns_client = own
        return sb

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def state(self) -> str:
        return self.info.state

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, state={self.state!r})"

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(
        self, et: Optional[Type[BaseException]], ev: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.destroy(missing_ok=True)

    def _vm(self, req: Req) -> Req:
        req.path = f"/v1/vms/{self.id}{req.path}"
        return req

    def _set(self, j: Any) -> VM:
        self.info = VM.from_json(j)
        return self.info

    def refresh(self) -> VM:
        return self.client._json(self._vm(Req("GET", "")), self._set)

    def exec(
        self, cmd: str, cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
        timeout_ms: Optional[int] = None, *, on_stdout: Optional[core.OutputCallback] = None,
        on_stderr: Optional[core.OutputCallback] = None,
    ) -> ExecResult:
        """Runs `cmd` under bash -lc as uid 1000; answers once it finished. With `on_stdout` or
        `on_stderr` the call streams: each gets the output's text as it arrives, and the answer is the
        same ExecResult (all the output included)."""
        return self._call(core.exec_req(cmd, cwd, env, timeout_ms), on_stdout, on_stderr)

    def run_ts(
        self, code: Optional[str] = None, *, path: Optional[str] = None, args: Optional[Sequence[str]] = None,
        env: Optional[Mapping[str, str]] = None, deno_flags: Optional[Sequence[str]] = None,
        timeout_ms: Optional[int] = None, on_stdout: Optional[core.OutputCallback] = None,
        on_stderr: Optional[core.OutputCallback] = None,
    ) -> ExecResult:
        req = core.run_req("run-ts", code, path, args, env, deno_flags, timeout_ms)
        return self._call(req, on_stdout, on_stderr)

    def run_js(
        self, code: Optional[str] = None, *, path: Optional[str] = None, args: Optional[Sequence[str]] = None,
        env: Optional[Mapping[str, str]] = None, node_flags: Optional[Sequence[str]] = None,
        timeout_ms: Optional[int] = None, on_stdout: Optional[core.OutputCallback] = None,
        on_stderr: Optional[core.OutputCallback] = None,
    ) -> ExecResult:
        req = core.run_req("run-js", code, path, args, env, node_flags, timeout_ms)
        return self._call(req, on_stdout, on_stderr)

    def _call(
        self, req: Req, on_stdout: Optional[core.OutputCallback], on_stderr: Optional[core.OutputCallback]
    ) -> ExecResult:
        if on_stdout is None and on_stderr is None:
            return self.client._json(self._vm(req), ExecResult.from_json)
        return self.client._stream(self._vm(req), on_stdout, on_stderr)

    def logs(self, type: Optional[str] = None, tail: Optional[int] = None) -> Logs:
        return self.client._json(self._vm(core.logs_req(type, tail)), Logs.from_json)

    def exec_logs(
        self, limit: Optional[int] = None, type: Optional[str] = None, before: Optional[str] = None
    ) -> ExecLogPage:
        return self.client._json(self._vm(core.exec_logs_req(limit, type, before)), ExecLogPage.from_json)

    def start(self) -> VM:
        self.client._send(self._vm(Req("POST", "/start", read_timeout=300.0)))
        return self.refresh()

    def stop(self) -> VM:
        self.client._send(self._vm(Req("POST", "/stop", read_timeout=120.0)))
        return self.refresh()

    def pause(self) -> VM:
        return self.client._json(self._vm(Req("POST", "/pause", read_timeout=300.0)), self._set)

    def resume(self) -> VM:
        return self.client._json(self._vm(Req("POST", "/resume", read_timeout=300.0)), self._set)

    def set_timeout(self, seconds: Optional[int], action: Optional[str] = None) -> VM:
        """Deadline now + `seconds` (None clears it); `action` is 'destroy' or 'pause'."""
        return self.client._json(self._vm(core.timeout_req(seconds, action)), self._set)

    def set_metadata(self, metadata: Mapping[str, Optional[str]]) -> VM:
        """Merges: a string sets a key, None removes it, other keys stay."""
        return self.client._json(self._vm(Req("PATCH", "", json={"metadata": dict(metadata)})), self._set)

    def peers_sync(self) -> None:
        """Rebuilds /workspace/peers from the linked providers as they are now (RUNNING VM only)."""
        self.client._send(self._vm(core.peers_sync_req()))

    def set_peer_source_mode(self, alias: str, mode: str) -> VM:
        """'hidden' or 'mounted' for the link `alias`; /workspace/peers is rebuilt with it."""
        self.client._send(self._vm(core.peer_mode_req(alias, mode)))
        return self.refresh()

    def snapshot(self) -> Snapshot:
        return self.client._json(self._vm(Req("POST", "/snapshots", read_timeout=300.0)), Snapshot.from_json)

    def destroy(self, *, missing_ok: bool = False) -> None:
        try:
            self.client._send(self._vm(Req("DELETE", "", read_timeout=120.0)))
        except NotFoundError:
            if not missing_ok:
                raise
        finally:
            if self._owns_client:
                self.client.close()


class Files:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    def upload(self, dest: str, source: Source) -> None:
        """bytes or a local file → the file `dest`; a local directory → its contents merged into the
        directory `dest`. Relative `dest` is under /workspace. Sent as one tar.gz (at most 10 MiB)."""
        self._sb.client._send(self._sb._vm(core.upload_req(dest, source)))

    def download_archive(self, path: str) -> bytes:
        """The tar.gz the manager answers: a directory's contents, or a file under its own name."""
        return self._sb.client._send(self._sb._vm(core.download_req(path))).content

    def download(self, path: str) -> bytes:
        """The content of the file at `path` (ValueError for a directory: use download_to)."""
        return core.single_file(self.download_archive(path), path)

    def download_to(self, path: str, local_dir: PathLike) -> Path:
        """Extracts `path` (a file, or a directory's contents) into `local_dir`; links are skipped."""
        return core.extract(self.download_archive(path), local_dir)


class Images:
    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self) -> List[Image]:
        return self._c._json(Req("GET", "/v1/images"), lambda j: [Image.from_json(i) for i in j])

    def get(self, image_id: str) -> Image:
        return self._c._json(Req("GET", f"/v1/images/{image_id}"), Image.from_json)

    def create(self, name: str, description: str) -> Image:
        body = {"name": name, "description": description}
        return self._c._json(Req("POST", "/v1/images", json=body), Image.from_json)

    def _put(self, image_id: str, part: str, source: Source) -> Image:
        self._c._send(core.image_part(image_id, part, source, core.file_chunks))
        return self.get(image_id)

    def upload_kernel(self, image_id: str, source: Source) -> Image:
        """An ELF vmlinux or bzImage, as bytes or a local path (streamed)."""
        return self._put(image_id, "kernel", source)

    def upload_rootfs(self, image_id: str, source: Source) -> Image:
        """An ext4 image, as bytes or a local path (streamed)."""
        return self._put(image_id, "rootfs", source)

    def upload_initrd(self, image_id: str, source: Source) -> Image:
        return self._put(image_id, "initrd", source)

    def upload_bundle(self, image_id: str, source: Source) -> Image:
        """A zip with vmlinux, initrd and/or rootfs.ext4."""
        return self._put(image_id, "bundle", source)

    def delete_initrd(self, image_id: str) -> None:
        self._c._send(Req("DELETE", f"/v1/images/{image_id}/initrd"))

    def set_default(self, image_id: str) -> None:
        self._c._send(Req("POST", f"/v1/images/{image_id}/set-default"))

    def delete(self, image_id: str) -> None:
        self._c._send(Req("DELETE", f"/v1/images/{image_id}"))


class Snapshots:
    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self, scope: Optional[str] = None) -> List[Snapshot]:
        params: Dict[str, str] = {"scope": scope} if scope else {}
        req = Req("GET", "/v1/snapshots", params=list(params.items()))
        return self._c._json(req, lambda j: [Snapshot.from_json(s) for s in j])

    def get(self, snapshot_id: str) -> Snapshot:
        return self._c._json(Req("GET", f"/v1/snapshots/{snapshot_id}"), Snapshot.from_json)

    def delete(self, snapshot_id: str) -> None:
        self._c._send(Req("DELETE", f"/v1/snapshots/{snapshot_id}"))
