"""The asyncio client: basics on the shared sandbox, and one VM of its own in a raising `async with`."""

from __future__ import annotations

import pytest

from rds_manager import Manager
from run_dat_sheesh import AsyncClient, AsyncSandbox, NotFoundError, Sandbox


async def test_async_basics(manager: Manager, sandbox: Sandbox) -> None:
    async with AsyncClient(manager.url, manager.key) as c:
        sb = await c.sandboxes.get(sandbox.id)
        assert sb.state == "RUNNING"
        assert sandbox.id in [s.id for s in await c.sandboxes.list(state="RUNNING")]
        r = await sb.exec("echo async; exit 4")
        assert (r.exit_code, r.stdout) == (4, "async\n")
        await sb.files.upload("async.txt", b"via asyncio")
        assert await sb.files.download("async.txt") == b"via asyncio"
        assert (await sb.refresh()).id == sandbox.id
        assert (await sb.exec_logs(limit=1)).entries
        assert isinstance(await c.images.list(), list) and isinstance(await c.snapshots.list(), list)


async def test_async_context_manager_destroys_on_error(manager: Manager) -> None:
    made = []
    with pytest.raises(KeyError):
        async with AsyncSandbox.create(url=manager.url, api_key=manager.key, metadata={"t": "async"}) as sb:
            made.append(sb.id)
            assert (await sb.exec("echo up")).stdout == "up\n"
            raise KeyError("body failed")
    assert made
    async with AsyncClient(manager.url, manager.key) as c:
        with pytest.raises(NotFoundError):
            await c.sandboxes.get(made[0])
        assert await c.sandboxes.list(metadata={"t": "async"}) == []
