"""What needs no manager: version tie, error mapping, retry policy, archives, request shapes,
streamed exec/run (httpx.MockTransport, streamed bodies from generators)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import tarfile
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator, List, Tuple

import httpx
import pytest

import run_dat_sheesh as rds
from run_dat_sheesh import _core as core

ROOT = Path(__file__).resolve().parents[3]


def test_version_follows_the_manager() -> None:
    cargo = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M)
    assert version is not None
    pyproject = (ROOT / "sdk/python/pyproject.toml").read_text()
    assert f'version = "{version.group(1)}"' in pyproject
    assert rds.__version__ == version.group(1)


def mock(handler: Callable[[httpx.Request], httpx.Response], **kw: object) -> rds.Client:
    http = httpx.Client(base_url="http://rds.test", transport=httpx.MockTransport(handler))
    return rds.Client("http://rds.test", "k", http_client=http, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "status,cls",
    [(400, rds.ValidationError), (401, rds.AuthenticationError), (403, rds.ForbiddenError),
     (404, rds.NotFoundError), (409, rds.ConflictError), (413, rds.ValidationError),
     (415, rds.ValidationError), (429, rds.RateLimitError), (500, rds.ServerError),
     (507, rds.ServerError), (405, rds.RdsError)],
)
def test_statuses_map_to_exceptions(status: int, cls: type) -> None:
    c = mock(lambda r: httpx.Response(status, json={"message": "m!"}, headers={"retry-after": "7"}),
             max_retries=0)
    with pytest.raises(cls) as e:
        c.images.list()
    assert type(e.value) is cls and e.value.status == status and e.value.message == "m!"
    if cls is rds.RateLimitError:
        assert e.value.retry_after == 7.0


def test_key_and_agent_header_are_sent() -> None:
    seen: List[httpx.Request] = []

    def h(r: httpx.Request) -> httpx.Response:
        seen.append(r)
        return httpx.Response(200, json=[])

    mock(h).images.list()
    assert seen[0].headers["x-api-key"] == "k"
    assert seen[0].headers["user-agent"].startswith("run-dat-sheesh-python/")


def test_idempotent_calls_retry_bounded_and_posts_never() -> None:
    calls: List[str] = []

    def h(r: httpx.Request) -> httpx.Response:
        calls.append(r.method)
        return httpx.Response(503, json={"message": "busy"})

    c = mock(h, max_retries=2)
    with pytest.raises(rds.ServerError):
        c.snapshots.list()
    assert calls == ["GET"] * 3
    calls.clear()
    with pytest.raises(rds.ServerError):
        c.images.create("n", "d")
    assert calls == ["POST"]


def test_get_recovers_after_a_connection_error() -> None:
    n = {"calls": 0}

    def h(r: httpx.Request) -> httpx.Response:
        n["calls"] += 1
        if n["calls"] == 1:
            raise httpx.ConnectError("refused", request=r)
        return httpx.Response(200, json=[])

    assert mock(h).snapshots.list() == []
    assert n["calls"] == 2
    with pytest.raises(rds.APIConnectionError) as e:
        mock(lambda r: (_ for _ in ()).throw(httpx.ConnectError("down", request=r)), max_retries=0).images.list()
    assert e.value.status is None


def test_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RDS_URL", "http://example.invalid:9/")
    monkeypatch.setenv("RDS_API_KEY", "from-env")
    c = rds.Client()
    assert (c.url, c.api_key) == ("http://example.invalid:9", "from-env")
    c.close()


def members(req: core.Req) -> dict:
    with tarfile.open(fileobj=io.BytesIO(req.content), mode="r:gz") as t:
        return {m.name: (t.extractfile(m).read() if m.isfile() else None) for m in t.getmembers()}  # type: ignore[union-attr]


def test_upload_archives(tmp_path: Path) -> None:
    r = core.upload_req("a/b.txt", b"hi")
    assert r.params == [("dest", "/workspace/a")] and members(r) == {"b.txt": b"hi"}
    (tmp_path / "f.sh").write_text("echo")
    r = core.upload_req("/workspace/run.sh", tmp_path / "f.sh")
    assert r.params == [("dest", "/workspace")] and members(r) == {"run.sh": b"echo"}
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "x").write_bytes(b"x")
    r = core.upload_req("proj", tmp_path / "d")
    assert r.params == [("dest", "/workspace/proj")] and members(r) == {"sub": None, "sub/x": b"x"}
    (tmp_path / "d" / "link").symlink_to("sub")
    with pytest.raises(ValueError, match="only regular files"):
        core.upload_req("proj", tmp_path / "d")


def test_extract_refuses_escapes(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("../evil")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="escapes"):
        core.extract(buf.getvalue(), tmp_path / "out")
    assert not (tmp_path / "evil").exists()


def test_run_needs_exactly_one_of_code_and_path() -> None:
    with pytest.raises(ValueError):
        core.run_req("run-js", None, None, None, None, None, None)
    with pytest.raises(ValueError):
        core.run_req("run-js", "1", "a.js", None, None, None, None)
    r = core.run_req("run-ts", "1", None, None, {"A": "b"}, ["--quiet"], 5)
    assert r.json == {"code": "1", "env": ["A=b"], "denoFlags": ["--quiet"], "timeoutMs": 5}


def targz(*names: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for n in names:
            info = tarfile.TarInfo(n)
            info.size = 2
            t.addfile(info, io.BytesIO(b"ok"))
    return buf.getvalue()


def test_download_takes_a_file_not_a_one_file_directory() -> None:
    assert core.single_file(targz("a.txt"), "/workspace/dir/a.txt") == b"ok"
    with pytest.raises(ValueError, match="not a single file"):
        core.single_file(targz("./a.txt"), "dir")


def test_create_sends_secret_env_as_key_value_strings() -> None:
    req = core.create_vm(1, 256, None, None, None, None, None, None, None,
                         secret_env={"TOKEN": "abcd1234", "EMPTY": ""})
    assert req.json is not None and req.json["secretEnv"] == ["TOKEN=abcd1234", "EMPTY="]
    plain = core.create_vm(1, 256, None, None, None, None, None, None, None)
    assert plain.json is not None and "secretEnv" not in plain.json


PROVIDER = "00000000-0000-4000-8000-0000000000aa"


def test_create_sends_peer_links_in_camel_case() -> None:
    req = core.create_vm(1, 256, None, None, None, None, None, None, None, peer_links=[
        {"alias": "math", "vm_id": PROVIDER},
        rds.PeerLink("src", PROVIDER, source_mode="mounted"),
    ])
    assert req.json is not None and req.json["peerLinks"] == [
        {"alias": "math", "vmId": PROVIDER, "sourceMode": "hidden"},
        {"alias": "src", "vmId": PROVIDER, "sourceMode": "mounted"},
    ]
    plain = core.create_vm(1, 256, None, None, None, None, None, None, None, peer_links=[])
    assert plain.json is not None and "peerLinks" not in plain.json
    with pytest.raises(ValueError, match="alias, vm_id and source_mode"):
        core.create_vm(1, 256, None, None, None, None, None, None, None, peer_links=[{"alias": "a", "vmId": "x"}])


def vm_json(**extra: object) -> dict:
    return {"id": "v", "state": "RUNNING", **extra}


def test_peer_calls_send_the_right_requests_and_read_the_links() -> None:
    seen: List[httpx.Request] = []
    links = [{"alias": "math", "vmId": PROVIDER, "sourceMode": "mounted"}]

    def h(r: httpx.Request) -> httpx.Response:
        seen.append(r)
        if r.method == "GET" or r.url.path == "/v1/vms":
            return httpx.Response(200, json=vm_json(peerLinks=links))
        return httpx.Response(204)

    c = mock(h)
    sb = c.sandboxes.create(peer_links=[rds.PeerLink("math", PROVIDER, "mounted")])
    assert sb.info.peer_links == [rds.PeerLink("math", PROVIDER, "mounted")]
    assert sb.info.raw["peerLinks"] == links
    assert sb.peers_sync() is None
    vm = sb.set_peer_source_mode("math", "mounted")
    assert vm.peer_links[0].source_mode == "mounted" and sb.info is vm
    got = [(r.method, r.url.path, json.loads(r.content) if r.content else None) for r in seen]
    assert got[1:] == [
        ("POST", "/v1/vms/v/peers/sync", None),
        ("PATCH", "/v1/vms/v/peers/math", {"sourceMode": "mounted"}),
        ("GET", "/v1/vms/v", None),
    ]
    assert core.peer_mode_req("a/b", "hidden").path == "/peers/a%2Fb"
    assert core.peers_sync_req().read_timeout == core.peer_mode_req("a", "hidden").read_timeout == 300.0
    # The answer of a manager without peers has no peerLinks: an empty list, not an error.
    assert rds.VM.from_json(vm_json()).peer_links == []


def test_async_peer_calls() -> None:
    seen: List[Tuple[str, str, object]] = []

    def h(r: httpx.Request) -> httpx.Response:
        seen.append((r.method, r.url.path, json.loads(r.content) if r.content else None))
        return httpx.Response(200, json=vm_json()) if r.method == "GET" else httpx.Response(204)

    async def go() -> None:
        http = httpx.AsyncClient(base_url="http://rds.test", transport=httpx.MockTransport(h))
        async with rds.AsyncClient("http://rds.test", "k", http_client=http) as c:
            sb = rds.AsyncSandbox(c, rds.VM.from_json(vm_json()))
            await sb.peers_sync()
            await sb.set_peer_source_mode("math", "hidden")

    asyncio.run(go())
    assert seen == [("POST", "/v1/vms/v/peers/sync", None), ("PATCH", "/v1/vms/v/peers/math", {"sourceMode": "hidden"}),
                    ("GET", "/v1/vms/v", None)]


# --- streamed exec, run-ts and run-js ------------------------------------------------------------

NDJSON = {"content-type": "application/x-ndjson"}
EXIT = {"type": "exit", "exitCode": 3, "stdoutTruncated": False, "stderrTruncated": True, "timedOut": False,
        "durationMs": 12}


def line(**event: object) -> bytes:
    return json.dumps(event).encode() + b"\n"


def streaming_sandbox(handler: Callable[[httpx.Request], httpx.Response]) -> rds.Sandbox:
    return rds.Sandbox(mock(handler), rds.VM.from_json(vm_json()))


def test_exec_streams_output_to_the_callbacks_as_it_arrives() -> None:
    log: List[str] = []
    seen: List[httpx.Request] = []

    def body() -> Iterator[bytes]:
        log.append("sent a")
        yield line(type="stdout", data="a\n") + b'{"type":"std'  # a line cut between two chunks
        log.append("sent b")
        yield b'err","data":"b\\n"}\n{"type":"stdout","data":"\xc3'  # and a character
        yield b'\xa9"}\n' + line(type="progress", pct=5)  # a later release's line: skipped
        log.append("sent exit")
        yield json.dumps(EXIT).encode()  # the last line without its newline

    def h(r: httpx.Request) -> httpx.Response:
        seen.append(r)
        return httpx.Response(200, headers=NDJSON, content=body())

    r = streaming_sandbox(h).exec("x", timeout_ms=5, on_stdout=lambda t: log.append(f"out {t}"),
                                  on_stderr=lambda t: log.append(f"err {t}"))
    assert log == ["sent a", "out a\n", "sent b", "err b\n", "out é", "sent exit"]
    assert (r.exit_code, r.stdout, r.stderr, r.stdout_truncated, r.stderr_truncated, r.duration_ms, r.ok) == (
        3, "a\né", "b\n", False, True, 12, False)
    assert not r.has_result and "type" not in r.raw and r.raw["stderr"] == "b\n"
    assert seen[0].headers["accept"] == "application/x-ndjson" and seen[0].url.path == "/v1/vms/v/exec"
    assert json.loads(seen[0].content) == {"cmd": "x", "timeoutMs": 5}


def test_without_callbacks_exec_stays_buffered() -> None:
    seen: List[httpx.Request] = []

    def h(r: httpx.Request) -> httpx.Response:
        seen.append(r)
        return httpx.Response(200, json={"exitCode": 0, "stdout": "x", "stderr": "", "timedOut": False})

    assert streaming_sandbox(h).exec("x").stdout == "x"
    assert "application/x-ndjson" not in seen[0].headers.get("accept", "")


def test_runs_stream_and_keep_their_result() -> None:
    paths: List[str] = []

    def h(r: httpx.Request) -> httpx.Response:
        paths.append(r.url.path)
        done = {**EXIT, "exitCode": 0, "result": {"n": 42}, "error": None}
        return httpx.Response(200, headers=NDJSON, content=iter([line(type="stdout", data="hi\n"), line(**done)]))

    sb = streaming_sandbox(h)
    got: List[str] = []
    js = sb.run_js("console.log('hi')", on_stdout=got.append)
    ts = sb.run_ts(path="m.ts", on_stderr=got.append)  # stdout is still collected
    assert got == ["hi\n"] and paths == ["/v1/vms/v/run-js", "/v1/vms/v/run-ts"]
    for r in (js, ts):
        assert r.ok and r.stdout == "hi\n" and r.has_result and r.result == {"n": 42} and r.error is None


def test_an_error_line_raises_and_a_cut_stream_too() -> None:
    got: List[str] = []
    failing = [line(type="stdout", data="partial"), line(type="error", message="Agent stream ended early")]
    sb = streaming_sandbox(lambda r: httpx.Response(200, headers=NDJSON, content=iter(failing)))
    with pytest.raises(rds.ServerError) as e:
        sb.exec("x", on_stdout=got.append)
    assert e.value.message == "Agent stream ended early" and e.value.status is None and got == ["partial"]
    cut = streaming_sandbox(lambda r: httpx.Response(200, headers=NDJSON, content=iter([line(type="stdout", data="x")])))
    with pytest.raises(rds.APIConnectionError, match="ended before"):
        cut.exec("x", on_stdout=got.append)


def test_refusals_before_the_start_are_ordinary_errors() -> None:
    sb = streaming_sandbox(lambda r: httpx.Response(409, json={"message": "VM must be RUNNING"}))
    with pytest.raises(rds.ConflictError) as e:
        sb.exec("x", on_stdout=print)
    assert e.value.status == 409 and e.value.message == "VM must be RUNNING"


def test_a_callback_that_raises_ends_the_call() -> None:
    sb = streaming_sandbox(lambda r: httpx.Response(200, headers=NDJSON, content=iter([line(type="stdout", data="x")])))

    def boom(text: str) -> None:
        raise KeyError(text)

    with pytest.raises(KeyError):
        sb.exec("x", on_stdout=boom)


def test_a_manager_without_streaming_gives_the_output_in_one_chunk() -> None:
    reply = {"exitCode": 1, "stdout": "all\n", "stderr": "", "timedOut": False, "durationMs": 3}
    sb = streaming_sandbox(lambda r: httpx.Response(200, json=reply))
    got: List[str] = []
    r = sb.exec("x", on_stdout=got.append, on_stderr=got.append)
    assert got == ["all\n"] and (r.exit_code, r.stdout) == (1, "all\n")


def test_async_exec_streams_with_sync_or_async_callbacks() -> None:
    log: List[str] = []

    async def body() -> AsyncIterator[bytes]:
        log.append("sent a")
        yield line(type="stdout", data="a\n")
        log.append("sent b")
        yield line(type="stderr", data="b\n")
        yield line(**EXIT)

    def h(r: httpx.Request) -> httpx.Response:
        assert r.headers["accept"] == "application/x-ndjson"
        return httpx.Response(200, headers=NDJSON, content=body())

    async def on_stderr(text: str) -> None:
        await asyncio.sleep(0)
        log.append(f"err {text}")

    async def go() -> rds.ExecResult:
        http = httpx.AsyncClient(base_url="http://rds.test", transport=httpx.MockTransport(h))
        async with rds.AsyncClient("http://rds.test", "k", http_client=http) as c:
            sb = rds.AsyncSandbox(c, rds.VM.from_json(vm_json()))
            return await sb.exec("x", on_stdout=lambda t: log.append(f"out {t}"), on_stderr=on_stderr)

    r = asyncio.run(go())
    assert log == ["sent a", "out a\n", "sent b", "err b\n"]
    assert (r.exit_code, r.stdout, r.stderr) == (3, "a\n", "b\n")

    async def failing() -> None:
        http = httpx.AsyncClient(base_url="http://rds.test", transport=httpx.MockTransport(
            lambda r: httpx.Response(200, headers=NDJSON, content=line(type="error", message="VM died"))))
        async with rds.AsyncClient("http://rds.test", "k", http_client=http) as c:
            await rds.AsyncSandbox(c, rds.VM.from_json(vm_json())).run_ts("1", on_stdout=print)

    with pytest.raises(rds.ServerError, match="VM died"):
        asyncio.run(failing())
