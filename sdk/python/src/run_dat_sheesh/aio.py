"""The asyncio client: `AsyncClient` and `AsyncSandbox`, the same surface as the sync one with
awaitable methods. `async with AsyncSandbox.create(...) as sb:` destroys the VM on exit."""

from __future__ import annotations

import asyncio
import inspect
import os
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Generator, List, Mapping, Optional, Sequence, TypeVar, Union

import httpx

from . import _core as core
from ._core import Req, Source
from .errors import NotFoundError
from .models import VM, ExecLogPage, ExecResult, Image, Logs, Snapshot

T = TypeVar("T")
PathLike = Union[str, "os.PathLike[str]"]


class AsyncClient:
    """Talks to one manager. `url` and `api_key` default to the env vars RDS_URL and RDS_API_KEY."""

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 2,
        http_client: Optional[httpx.AsyncClient] = None,
    ) -> None:
        self.url, self.api_key = core.settings(url, api_key)
        self.max_retries = max_retries
        self._timeout = httpx.Timeout(timeout)
        self._http = http_client or httpx.AsyncClient(base_url=self.url, timeout=self._timeout)
        self._headers = core.headers(self.api_key)
        self.sandboxes = AsyncSandboxes(self)
        self.images = AsyncImages(self)
        self.snapshots = AsyncSnapshots(self)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _send(self, req: Req) -> httpx.Response:
        headers = {**self._headers, **(req.headers or {})}
        attempt = 0
        while True:
            try:
                resp = await self._http.request(
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
            await asyncio.sleep(core.backoff(attempt))
            attempt += 1

    async def _json(self, req: Req, parse: Callable[[Any], T]) -> T:
        return parse((await self._send(req)).json())

    async def _stream(
        self, req: Req, on_stdout: Optional[core.OutputCallback], on_stderr: Optional[core.OutputCallback]
    ) -> ExecResult:
        """As Client._stream; a callback may return an awaitable, awaited before reading on."""
        headers = {**self._headers, **(req.headers or {}), "Accept": core.NDJSON}
        out = core.OutputStream()
        try:
            async with self._http.stream(
                req.method, req.path, params=core.query(req), json=req.json, content=req.content,
                headers=headers, timeout=core.timeout_for(req, self._timeout),
            ) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    core.raise_for(resp)
                if not core.is_ndjson(resp):
                    await resp.aread()
                    result, chunks = core.OutputStream.buffered(resp.json())
                    await _deliver(chunks, on_stdout, on_stderr)
                    return result
                async for data in resp.aiter_bytes():
                    await _deliver(out.feed(data), on_stdout, on_stderr)
                await _deliver(out.end(), on_stdout, on_stderr)
        except httpx.TransportError as e:
            raise core.connection_error(e) from e
        return out.result()


async def _deliver(
    chunks: core.Chunks, on_stdout: Optional[core.OutputCallback], on_stderr: Optional[core.OutputCallback]
) -> None:
    for kind, text in chunks:
        cb = core.callback_for(kind, on_stdout, on_stderr)
        if cb is not None:
            r = cb(text)
            if inspect.isawaitable(r):
                await r


async def _achunks(path: Path) -> AsyncIterator[bytes]:
    for chunk in core.file_chunks(path):
        yield chunk


class _Creating:
    """What AsyncSandbox.create returns: await it for the sandbox, or use it with `async with`."""

    def __init__(self, make: Callable[[], Awaitable["AsyncSandbox"]]) -> None:
        self._make = make
        self._sb: Optional[AsyncSandbox] = None

    def __await__(self) -> Generator[Any, None, "AsyncSandbox"]:
        return self._make().__await__()

    async def __aenter__(self) -> "AsyncSandbox":
        self._sb = await self._make()
        return self._sb

    async def __aexit__(self, *exc: object) -> None:
        if self._sb is not None:
            await self._sb.destroy(missing_ok=True)


class AsyncSandboxes:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(
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
    ) -> "AsyncSandbox":
        req = core.create_vm(cpu, mem_mb, image_id, disk_size_mb, allow_ips, outbound_internet,
                             timeout_sec, timeout_action, metadata, snapshot_id, secret_env, peer_links)
        return AsyncSandbox(self._c, await self._c._json(req, VM.from_json))

    async def list(
        self, state: Union[None, str, Sequence[str]] = None, metadata: Optional[Mapping[str, str]] = None
    ) -> List["AsyncSandbox"]:
        vms = await self._c._json(core.list_vms(state, metadata), lambda j: [VM.from_json(v) for v in j])
        return [AsyncSandbox(self._c, v) for v in vms]

    async def get(self, vm_id: str) -> "AsyncSandbox":
        return AsyncSandbox(self._c, await self._c._json(Req("GET", f"/v1/vms/{vm_id}"), VM.from_json))


class AsyncSandbox:
    """One VM, awaitable methods. As an async context manager it destroys the VM on exit."""

    def __init__(self, client: AsyncClient, info: VM, *, owns_client: bool = False) -> None:
        self.client = client
        self.info = info
        self.files = AsyncFiles(self)
        self._owns_client = owns_client

    @classmethod
    def create(
        cls, *, client: Optional[AsyncClient] = None, url: Optional[str] = None, api_key: Optional[str] = None,
        **kwargs: Any,
    ) -> _Creating:
        return _Creating(lambda: cls._with_client(client, url, api_key, lambda c: c.sandboxes.create(**kwargs)))

    @classmethod
    def restore(
        cls, snapshot_id: str, *, client: Optional[AsyncClient] = None, url: Optional[str] = None,
        api_key: Optional[str] = None, **kwargs: Any,
    ) -> _Creating:
        async def make(c: AsyncClient) -> "AsyncSandbox":
            if "cpu" not in kwargs or "mem_mb" not in kwargs:
                snap = await c.snapshots.get(snapshot_id)
                kwargs.setdefault("cpu", snap.cpu or 1)
                kwargs.setdefault("mem_mb", snap.mem_mb or 256)
            return await c.sandboxes.create(snapshot_id=snapshot_id, **kwargs)
        return _Creating(lambda: cls._with_client(client, url, api_key, make))

    @classmethod
    async def _with_client(
        cls, client: Optional[AsyncClient], url: Optional[str], api_key: Optional[str],
        make: Callable[[AsyncClient], Awaitable["AsyncSandbox"]],
    ) -> "AsyncSandbox":
        own = client is None
        c = client or AsyncClient(url, api_key)
        try:
            sb = await make(c)
        except BaseException:
            if own:
                await c.close()
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
        return f"AsyncSandbox(id={self.id!r}, state={self.state!r})"

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.destroy(missing_ok=True)

    def _vm(self, req: Req) -> Req:
        req.path = f"/v1/vms/{self.id}{req.path}"
        return req

    def _set(self, j: Any) -> VM:
        self.info = VM.from_json(j)
        return self.info

    async def refresh(self) -> VM:
        return await self.client._json(self._vm(Req("GET", "")), self._set)

    async def exec(
        self, cmd: str, cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
        timeout_ms: Optional[int] = None, *, on_stdout: Optional[core.OutputCallback] = None,
        on_stderr: Optional[core.OutputCallback] = None,
    ) -> ExecResult:
        """As Sandbox.exec; the callbacks may be coroutine functions (awaited in order)."""
        return await self._call(core.exec_req(cmd, cwd, env, timeout_ms), on_stdout, on_stderr)

    async def run_ts(
        self, code: Optional[str] = None, *, path: Optional[str] = None, args: Optional[Sequence[str]] = None,
        env: Optional[Mapping[str, str]] = None, deno_flags: Optional[Sequence[str]] = None,
        timeout_ms: Optional[int] = None, on_stdout: Optional[core.OutputCallback] = None,
        on_stderr: Optional[core.OutputCallback] = None,
    ) -> ExecResult:
        req = core.run_req("run-ts", code, path, args, env, deno_flags, timeout_ms)
        return await self._call(req, on_stdout, on_stderr)

    async def run_js(
        self, code: Optional[str] = None, *, path: Optional[str] = None, args: Optional[Sequence[str]] = None,
        env: Optional[Mapping[str, str]] = None, node_flags: Optional[Sequence[str]] = None,
        timeout_ms: Optional[int] = None, on_stdout: Optional[core.OutputCallback] = None,
        on_stderr: Optional[core.OutputCallback] = None,
    ) -> ExecResult:
        req = core.run_req("run-js", code, path, args, env, node_flags, timeout_ms)
        return await self._call(req, on_stdout, on_stderr)

    async def _call(
        self, req: Req, on_stdout: Optional[core.OutputCallback], on_stderr: Optional[core.OutputCallback]
    ) -> ExecResult:
        if on_stdout is None and on_stderr is None:
            return await self.client._json(self._vm(req), ExecResult.from_json)
        return await self.client._stream(self._vm(req), on_stdout, on_stderr)

    async def logs(self, type: Optional[str] = None, tail: Optional[int] = None) -> Logs:
        return await self.client._json(self._vm(core.logs_req(type, tail)), Logs.from_json)

    async def exec_logs(
        self, limit: Optional[int] = None, type: Optional[str] = None, before: Optional[str] = None
    ) -> ExecLogPage:
        return await self.client._json(self._vm(core.exec_logs_req(limit, type, before)), ExecLogPage.from_json)

    async def start(self) -> VM:
        await self.client._send(self._vm(Req("POST", "/start", read_timeout=300.0)))
        return await self.refresh()

    async def stop(self) -> VM:
        await self.client._send(self._vm(Req("POST", "/stop", read_timeout=120.0)))
        return await self.refresh()

    async def pause(self) -> VM:
        return await self.client._json(self._vm(Req("POST", "/pause", read_timeout=300.0)), self._set)

    async def resume(self) -> VM:
        return await self.client._json(self._vm(Req("POST", "/resume", read_timeout=300.0)), self._set)

    async def set_timeout(self, seconds: Optional[int], action: Optional[str] = None) -> VM:
        return await self.client._json(self._vm(core.timeout_req(seconds, action)), self._set)

    async def set_metadata(self, metadata: Mapping[str, Optional[str]]) -> VM:
        return await self.client._json(self._vm(Req("PATCH", "", json={"metadata": dict(metadata)})), self._set)

    async def peers_sync(self) -> None:
        await self.client._send(self._vm(core.peers_sync_req()))

    async def set_peer_source_mode(self, alias: str, mode: str) -> VM:
        await self.client._send(self._vm(core.peer_mode_req(alias, mode)))
        return await self.refresh()

    async def snapshot(self) -> Snapshot:
        return await self.client._json(self._vm(Req("POST", "/snapshots", read_timeout=300.0)), Snapshot.from_json)

    async def destroy(self, *, missing_ok: bool = False) -> None:
        try:
            await self.client._send(self._vm(Req("DELETE", "", read_timeout=120.0)))
        except NotFoundError:
            if not missing_ok:
                raise
        finally:
            if self._owns_client:
                await self.client.close()


class AsyncFiles:
    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sb = sandbox

    async def upload(self, dest: str, source: Source) -> None:
        await self._sb.client._send(self._sb._vm(core.upload_req(dest, source)))

    async def download_archive(self, path: str) -> bytes:
        return (await self._sb.client._send(self._sb._vm(core.download_req(path)))).content

    async def download(self, path: str) -> bytes:
        return core.single_file(await self.download_archive(path), path)

    async def download_to(self, path: str, local_dir: PathLike) -> Path:
        return core.extract(await self.download_archive(path), local_dir)


class AsyncImages:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self) -> List[Image]:
        return await self._c._json(Req("GET", "/v1/images"), lambda j: [Image.from_json(i) for i in j])

    async def get(self, image_id: str) -> Image:
        return await self._c._json(Req("GET", f"/v1/images/{image_id}"), Image.from_json)

    async def create(self, name: str, description: str) -> Image:
        body = {"name": name, "description": description}
        return await self._c._json(Req("POST", "/v1/images", json=body), Image.from_json)

    async def _put(self, image_id: str, part: str, source: Source) -> Image:
        await self._c._send(core.image_part(image_id, part, source, _achunks))
        return await self.get(image_id)

    async def upload_kernel(self, image_id: str, source: Source) -> Image:
        return await self._put(image_id, "kernel", source)

    async def upload_rootfs(self, image_id: str, source: Source) -> Image:
        return await self._put(image_id, "rootfs", source)

    async def upload_initrd(self, image_id: str, source: Source) -> Image:
        return await self._put(image_id, "initrd", source)

    async def upload_bundle(self, image_id: str, source: Source) -> Image:
        return await self._put(image_id, "bundle", source)

    async def delete_initrd(self, image_id: str) -> None:
        await self._c._send(Req("DELETE", f"/v1/images/{image_id}/initrd"))

    async def set_default(self, image_id: str) -> None:
        await self._c._send(Req("POST", f"/v1/images/{image_id}/set-default"))

    async def delete(self, image_id: str) -> None:
        await self._c._send(Req("DELETE", f"/v1/images/{image_id}"))


class AsyncSnapshots:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self, scope: Optional[str] = None) -> List[Snapshot]:
        params: Dict[str, str] = {"scope": scope} if scope else {}
        req = Req("GET", "/v1/snapshots", params=list(params.items()))
        return await self._c._json(req, lambda j: [Snapshot.from_json(s) for s in j])

    async def get(self, snapshot_id: str) -> Snapshot:
        return await self._c._json(Req("GET", f"/v1/snapshots/{snapshot_id}"), Snapshot.from_json)

    async def delete(self, snapshot_id: str) -> None:
        await self._c._send(Req("DELETE", f"/v1/snapshots/{snapshot_id}"))
