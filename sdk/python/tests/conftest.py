"""A real manager for the suite, started once per session (tests/rds_manager.py). One sandbox is
shared by most tests; the whole suite boots three VMs."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from rds_manager import Manager, Unavailable, run_manager
from run_dat_sheesh import Client, Sandbox

# Low enough that a test reaches it in a few calls (counted per VM id, so the shared sandbox's own
# run-js calls stay well under it).
RUN_JS_LIMIT = 4


@pytest.fixture(scope="session")
def manager() -> Iterator[Manager]:
    try:
        with run_manager({"RATE_LIMIT_RUN_JS": str(RUN_JS_LIMIT)}) as m:
            yield m
    except Unavailable as e:
        if os.environ.get("RDS_REQUIRE_E2E") == "1":
            pytest.fail(str(e))
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def client(manager: Manager) -> Iterator[Client]:
    with Client(manager.url, manager.key) as c:
        yield c


@pytest.fixture(scope="session")
def sandbox(client: Client) -> Iterator[Sandbox]:
    """The suite's first VM, shared; tests that change its state put it back."""
    with Sandbox.create(client=client, cpu=1, mem_mb=256, metadata={"suite": "sdk-python"}) as sb:
        yield sb
