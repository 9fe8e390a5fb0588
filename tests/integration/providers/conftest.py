"""Shared by the provider tests: providers built by the production factory (so the app's
settings reach the real adapter, pointed at a double), providers closed when a test ends, and
the HTTP API calls of the end-to-end tests (notify and run the worker, read a delivery back,
register a device, see that a given-back delivery waits for its Retry-After)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import drain
from tests.fakes.clock import FakeClock
from tidings.bootstrap import Container
from tidings.ports import Provider

P = TypeVar("P", bound=Provider)


@pytest.fixture
def providers(real_providers: Any) -> Any:
    return real_providers


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[P], P]]:
    """`closing(SomeProvider(config, options))`: the provider, closed when the test ends."""
    built: list[Provider] = []

    def keep(provider: P) -> P:
        built.append(provider)
        return provider

    yield keep
    for provider in built:
        await provider.close()


# --- through the HTTP API -------------------------------------------------------------------------

PUSH_TO_U1 = {"to": {"user_id": "u1"}, "channels": ["push"], "title": "Invoice", "body": "Due"}


async def notify(client: httpx.AsyncClient, app: dict[str, Any], doc: dict[str, Any] | None = None,
                 /, **fields: Any) -> dict[str, Any]:
    """POST /v1/notifications with `doc` (by default a push to user u1) and `fields` over it;
    the one notification it created."""
    r = await client.post("/v1/notifications", json={**(doc or PUSH_TO_U1), **fields},
                          headers=app["headers"])
    assert r.status_code == 202, r.text
    (item,) = r.json()["items"]
    return dict(item)


async def delivery(client: httpx.AsyncClient, app: dict[str, Any], notification_id: str) -> dict[str, Any]:
    """The one delivery of a notification."""
    r = await client.get(f"/v1/notifications/{notification_id}", headers=app["headers"])
    assert r.status_code == 200, r.text
    (d,) = r.json()["deliveries"]
    return dict(d)


async def notify_and_deliver(client: httpx.AsyncClient, container: Container, app: dict[str, Any],
                             doc: dict[str, Any] | None = None, /,
                             **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """`notify`, then the worker until idle, which handles that notification's one delivery; the
    notification and its delivery as the API shows them then."""
    n = await notify(client, app, doc, **fields)
    assert await drain(container) == 1
    return n, await delivery(client, app, n["id"])


async def register_device(client: httpx.AsyncClient, app: dict[str, Any], platform: str, token: Any,
                          user: str = "u1") -> dict[str, Any]:
    r = await client.post(f"/v1/users/{user}/devices", json={"platform": platform, "token": token},
                          headers=app["headers"])
    assert r.status_code == 201, r.text
    return dict(r.json())


async def device_of(client: httpx.AsyncClient, app: dict[str, Any], device_id: str,
                    user: str = "u1") -> dict[str, Any]:
    r = await client.get(f"/v1/users/{user}/devices", headers=app["headers"])
    assert r.status_code == 200, r.text
    return next(d for d in r.json()["items"] if d["id"] == device_id)


async def assert_due_after(container: Container, clock: FakeClock, seconds: int) -> None:
    """The delivery given back with Retry-After `seconds` is not due a second earlier, and is
    sent (alone) once they have passed."""
    clock.advance(seconds - 1)
    assert await container.dispatcher.run_once() == 0
    clock.advance(1)
    assert await drain(container) == 1
