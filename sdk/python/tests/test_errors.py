"""Error mapping against the real manager: 401, 403, 404, 429."""

from __future__ import annotations

import uuid

import httpx
import pytest

from conftest import RUN_JS_LIMIT
from rds_manager import ADMIN_PASSWORD, Manager
from run_dat_sheesh import AuthenticationError, Client, ForbiddenError, NotFoundError, RateLimitError, Sandbox
from run_dat_sheesh._core import Req
from run_dat_sheesh.models import VM


def test_bad_key_is_401(manager: Manager) -> None:
    with Client(manager.url, "not-the-key") as c:
        with pytest.raises(AuthenticationError) as e:
            c.sandboxes.list()
    assert e.value.status == 401 and e.value.message == "Unauthorized"


def test_unknown_ids_are_404(client: Client) -> None:
    vm_id = str(uuid.uuid4())
    with pytest.raises(NotFoundError) as e:
        client.sandboxes.get(vm_id)
    assert e.value.status == 404 and e.value.message == f"VM {vm_id} not found"
    with pytest.raises(NotFoundError, match="Snapshot not found"):
        client.snapshots.get(f"snap-{uuid.uuid4()}")
    with pytest.raises(NotFoundError, match="Image not found"):
        client.images.get(f"img-{uuid.uuid4()}")


def test_session_only_route_is_403(client: Client) -> None:
    # The SDK has no admin surface; the mapping is checked through its transport.
    with pytest.raises(ForbiddenError) as e:
        client._send(Req("GET", "/v1/admin/api-keys"))
    assert e.value.status == 403 and e.value.message == "Admin session required"


def db_key(manager: Manager) -> str:
    """A key of its own (made through an admin session), so that exhausting its rate budget leaves
    the master key's, which the other tests use, untouched."""
    with httpx.Client(base_url=manager.url) as h:
        login = h.post("/auth/login", json={"email": "a@b.c", "password": ADMIN_PASSWORD})
        login.raise_for_status()
        r = h.post("/v1/admin/api-keys", json={"name": "sdk-429"},
                   headers={"X-RDS-CSRF": login.json()["csrfToken"]})
        r.raise_for_status()
        return str(r.json()["apiKey"])


def test_rate_limit_is_429(manager: Manager) -> None:
    # run-js is counted before the handler looks the VM up: an unknown id reaches the limit
    # without booting anything.
    with Client(manager.url, db_key(manager)) as c:
        ghost = Sandbox(c, VM.from_json({"id": str(uuid.uuid4()), "state": "RUNNING"}))
        for _ in range(RUN_JS_LIMIT):
            with pytest.raises(NotFoundError):
                ghost.run_js("1")
        with pytest.raises(RateLimitError) as e:
            ghost.run_js("1")
    assert e.value.status == 429 and e.value.message.startswith("Rate limit exceeded")
    assert e.value.retry_after is not None and 0 < e.value.retry_after <= 60
