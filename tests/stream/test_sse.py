"""Server-sent events: the same stream for clients that read a plain HTTP response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ADMIN, create_app_with_key, make_settings
from tests.stream.conftest import Live
from tests.stream.test_websocket import send, token


@pytest.fixture
def settings() -> Any:
    return make_settings(stream_heartbeat_seconds=1)


async def events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """Each event as {"id"?, "data"?, "comment"?}."""
    current: dict[str, Any] = {}
    async for line in lines:
        if line == "":
            if current:
                yield current
            current = {}
        elif line.startswith(":"):
            current["comment"] = line[1:].strip()
        else:
            field, _, value = line.partition(": ")
            current[field] = orjson.loads(value) if field == "data" else value


async def next_event(it: AsyncIterator[dict[str, Any]], skip_comments: bool = True) -> dict[str, Any]:
    while True:
        ev = await asyncio.wait_for(it.__anext__(), 5)
        if not (skip_comments and "comment" in ev and "data" not in ev):
            return ev


async def test_events_resume_heartbeat_and_close(live: Live) -> None:
    shop = await create_app_with_key(live.client, "shop")
    tok = await token(live, shop, "ada")
    auth = {"Authorization": f"Bearer {tok}"}
    async with live.client.stream("GET", "/v1/users/me/events", headers=auth) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        it = events(r.aiter_lines())
        assert (await next_event(it)) == {"retry": "3000"}
        first = await next_event(it)
        assert first["id"] == "0" and first["data"]["type"] == "unread_count"
        await send(live, shop, ["ada"], "hi")
        created = await next_event(it)
        assert created["id"] == "1" and created["data"]["type"] == "notification.created"
        assert created["data"]["data"]["title"] == "hi"
        assert (await next_event(it))["data"]["data"] == {"count": 1, "total": 1}
        beat = await next_event(it, skip_comments=False)
        assert beat == {"comment": "heartbeat"}
    await send(live, shop, ["ada"], "while away")
    async with live.client.stream("GET", "/v1/users/me/events",
                                  headers={**auth, "Last-Event-ID": "1"}) as r:
        it = events(r.aiter_lines())
        await next_event(it)  # retry
        missed = await next_event(it)
        assert missed["id"] == "2" and missed["data"]["data"]["title"] == "while away"
        assert (await next_event(it))["data"]["type"] == "unread_count"
        # Revoking the key that signed the token ends the response, saying why.
        await live.client.delete(f"/v1/apps/shop/keys/{shop['id']}", headers=ADMIN)
        closed = await next_event(it)
        assert closed["data"] == {"type": "stream.closed", "data": {
            "code": 4401, "reason": "the key was revoked"}}
        with pytest.raises(StopAsyncIteration):
            await next_event(it)


async def test_event_stream_refusals(live: Live) -> None:
    shop = await create_app_with_key(live.client, "shop")
    r = await live.client.get("/v1/users/me/events", params={"token": "nonsense"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    r = await live.client.get("/v1/users/me/events", params={"token": shop["key"]})
    assert r.status_code == 401 and "never in a URL" in r.json()["detail"]
    tok = await token(live, shop, "ada")
    r = await live.client.get("/v1/users/me/events", params={"token": tok},
                              headers={"Last-Event-ID": "-1"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "after"


async def test_a_client_that_goes_away_leaves_nothing_behind(live: Live, container: Any) -> None:
    shop = await create_app_with_key(live.client, "shop")
    tok = await token(live, shop, "ada")
    registry = live.app.state.streams
    for _ in range(3):
        async with httpx.AsyncClient(base_url=live.http, timeout=5) as other, \
                other.stream("GET", "/v1/users/me/events", params={"token": tok}) as r:
            it = events(r.aiter_lines())
            await next_event(it)
            await next_event(it)
    assert len(registry.listeners) <= 3
    for _ in range(50):  # the next heartbeat finds them gone
        if not registry.listeners:
            break
        await asyncio.sleep(0.1)
    assert not registry.listeners
    assert not container.streams.hub._subscribers  # the hub forgot them too


async def test_last_event_id_wins_over_the_after_of_the_url(live: Live) -> None:
    """EventSource reconnects to the URL it was given, with the newer Last-Event-ID."""
    shop = await create_app_with_key(live.client, "shop")
    tok = await token(live, shop, "ada")
    for title in ("one", "two", "three"):
        await send(live, shop, ["ada"], title)
    async with live.client.stream("GET", "/v1/users/me/events",
                                  params={"token": tok, "after": "1"},
                                  headers={"Last-Event-ID": "2"}) as r:
        it = events(r.aiter_lines())
        await next_event(it)  # retry
        got = await next_event(it)
        assert got["id"] == "3" and got["data"]["data"]["title"] == "three"
