"""The sync client against a real manager and guest: one shared sandbox, plus one VM restored from
its snapshot inside a context manager whose body raises."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import List, Tuple

import pytest

from run_dat_sheesh import VM, Client, ConflictError, NotFoundError, Sandbox, ValidationError


def test_create_get_list_refresh(client: Client, sandbox: Sandbox) -> None:
    assert sandbox.state == "RUNNING" and sandbox.info.metadata == {"suite": "sdk-python"}
    got = client.sandboxes.get(sandbox.id)
    assert got.id == sandbox.id and got.info.guest_ip == sandbox.info.guest_ip
    assert [s.id for s in client.sandboxes.list(metadata={"suite": "sdk-python"})] == [sandbox.id]
    assert client.sandboxes.list(metadata={"suite": "other"}) == []
    assert sandbox.id in [s.id for s in client.sandboxes.list(state=["RUNNING", "PAUSED"])]
    assert client.sandboxes.list(state="STOPPED") == []
    assert sandbox.refresh().state == "RUNNING"


def test_exec(sandbox: Sandbox) -> None:
    r = sandbox.exec("echo $GREETING; pwd; echo oops >&2; exit 3", env={"GREETING": "hi"})
    assert (r.exit_code, r.stdout, r.stderr) == (3, "hi\n/workspace\n", "oops\n")
    assert not r.ok and not r.timed_out
    sandbox.exec("mkdir -p sub")
    assert sandbox.exec("pwd", cwd="sub").stdout == "/workspace/sub\n"
    slow = sandbox.exec("sleep 5", timeout_ms=300)
    assert slow.timed_out and slow.exit_code == -1
    with pytest.raises(ValidationError) as e:
        sandbox.exec("true", env={"1bad": "x"})
    assert e.value.status == 400 and "1bad" in e.value.message


def test_exec_and_run_ts_stream(sandbox: Sandbox) -> None:
    got: List[Tuple[str, str, float]] = []
    r = sandbox.exec(
        "echo a; sleep 0.2; echo b >&2; exit 3",
        on_stdout=lambda t: got.append(("out", t, time.monotonic())),
        on_stderr=lambda t: got.append(("err", t, time.monotonic())),
    )
    assert [(k, t) for k, t, _ in got] == [("out", "a\n"), ("err", "b\n")]
    # Each came as it was written, not both at the end.
    assert got[1][2] - got[0][2] >= 0.1, got
    assert (r.exit_code, r.stdout, r.stderr, r.timed_out) == (3, "a\n", "b\n", False)
    chunks: List[str] = []
    ts = sandbox.run_ts("console.log('ts out'); result.set({n: 6 * 7})", on_stdout=chunks.append)
    assert "".join(chunks) == ts.stdout == "ts out\n" and ts.exit_code == 0 and ts.result == {"n": 42}, ts
    with pytest.raises(ValidationError):
        sandbox.exec("true", env={"1bad": "x"}, on_stdout=chunks.append)


def test_files_bytes_file_and_directory(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.files.upload("notes/a.txt", b"alpha\n")
    assert sandbox.files.download("notes/a.txt") == b"alpha\n"
    assert sandbox.exec("cat /workspace/notes/a.txt").stdout == "alpha\n"
    local = tmp_path / "tool.sh"
    local.write_text("#!/bin/sh\necho tool ran\n")
    local.chmod(0o755)
    sandbox.files.upload("/workspace/bin/tool", local)
    assert sandbox.exec("./bin/tool").stdout == "tool ran\n"
    tree = tmp_path / "proj"
    (tree / "src").mkdir(parents=True)
    (tree / "src" / "main.txt").write_text("main")
    (tree / "README").write_text("readme")
    sandbox.files.upload("proj", tree)
    out = sandbox.files.download_to("proj", tmp_path / "back")
    assert (out / "src" / "main.txt").read_text() == "main" and (out / "README").read_text() == "readme"
    with pytest.raises(ValueError, match="not a single file"):
        sandbox.files.download("proj")


def test_run_ts_and_js(sandbox: Sandbox) -> None:
    js = sandbox.run_js("console.log(process.env.WHO); result.set({n: 6 * 7})", env={"WHO": "node"})
    assert js.exit_code == 0 and js.stdout == "node\n" and js.has_result and js.result == {"n": 42}
    sandbox.files.upload("mod.ts", b"console.log(Deno.args.join(','))\n")
    ts = sandbox.run_ts(path="mod.ts", args=["a", "b"])
    assert ts.exit_code == 0 and ts.stdout == "a,b\n", ts


def test_logs_and_exec_logs(sandbox: Sandbox) -> None:
    console = sandbox.logs(type="console.log", tail=5)
    assert console.type == "console.log" and 0 < len(console.lines) <= 5
    page = sandbox.exec_logs(limit=2, type="exec")
    assert len(page.entries) == 2 and page.has_more
    assert all(e.type == "exec" for e in page.entries) and page.entries[0].result is not None


def test_timeout_and_metadata(sandbox: Sandbox) -> None:
    vm = sandbox.set_timeout(600, "pause")
    assert vm.expires_at is not None and vm.timeout_action == "pause"
    vm = sandbox.set_timeout(None, "destroy")
    assert vm.expires_at is None and vm.timeout_action == "destroy"
    vm = sandbox.set_metadata({"owner": "py", "suite": None})
    assert vm.metadata == {"owner": "py"}
    assert sandbox.set_metadata({"suite": "sdk-python", "owner": None}).metadata == {"suite": "sdk-python"}


def test_pause_resume_and_conflicts(sandbox: Sandbox) -> None:
    assert sandbox.pause().state == "PAUSED"
    with pytest.raises(ConflictError) as e:
        sandbox.exec("true")
    assert e.value.status == 409 and "RUNNING" in e.value.message
    assert sandbox.resume().state == "RUNNING"
    assert sandbox.exec("cat notes/a.txt").stdout == "alpha\n"


def test_stop_start(sandbox: Sandbox) -> None:
    assert sandbox.stop().state == "STOPPED"
    with pytest.raises(ConflictError):
        sandbox.files.download("notes/a.txt")
    assert sandbox.start().state == "RUNNING"
    assert sandbox.exec("cat notes/a.txt").stdout == "alpha\n"


def test_snapshot_restore_in_a_raising_context_manager(client: Client, sandbox: Sandbox) -> None:
    sandbox.files.upload("marker", b"from the snapshot")
    snap = sandbox.snapshot()
    assert snap.id.startswith("snap-") and snap.source_vm_id == sandbox.id
    assert client.snapshots.get(snap.id).id == snap.id
    assert snap.id in [s.id for s in client.snapshots.list()]
    restored_id = None
    with pytest.raises(RuntimeError, match="body failed"):
        with Sandbox.restore(snap.id, client=client) as copy:
            restored_id = copy.id
            assert copy.id != sandbox.id and copy.info.source_snapshot_id == snap.id
            assert copy.files.download("marker") == b"from the snapshot"
            raise RuntimeError("body failed")
    assert restored_id is not None
    with pytest.raises(NotFoundError):
        client.sandboxes.get(restored_id)
    client.snapshots.delete(snap.id)
    with pytest.raises(NotFoundError):
        client.snapshots.get(snap.id)


def test_destroy_of_an_unknown_vm(client: Client) -> None:
    ghost = Sandbox(client, VM.from_json({"id": str(uuid.uuid4()), "state": "RUNNING"}))
    with pytest.raises(NotFoundError) as e:
        ghost.destroy()
    assert e.value.status == 404 and ghost.id in e.value.message
    ghost.destroy(missing_ok=True)
