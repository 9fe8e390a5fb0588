"""What the stream promises when things go wrong: no event for a rolled-back change, a lost
publish filled in from the store, a slow client cut off instead of buffering without end."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import create_app_with_key, make_settings
from tests.stream.conftest import Live, frame, open_stream, quiet
from tests.stream.test_websocket import send, token
from tidings.adapters.store.sql.idempotency import SqlIdempotency


@contextmanager
def publishes_dropped(hub: Any) -> Iterator[None]:
    """The hub loses what is published meanwhile (the store still has it)."""
    real = hub.publish

    async def dropped(events: Any) -> None:
        return None

    hub.publish = dropped
    try:
        yield
    finally:
        hub.publish = real


@pytest.fixture
def settings() -> Any:
    return make_settings(stream_buffer_events=8)


async def test_rolled_back_send_publishes_nothing(live: Live, monkeypatch: Any) -> None:
    shop = await create_app_with_key(live.client, "shop")
    tok = await token(live, shop, "ada")
    async with open_stream(live, f"/v1/users/me/stream?token={tok}") as ws:
        await frame(ws)

        async def broken(self: Any, record: Any) -> None:
            raise RuntimeError("the disk is full")

        monkeypatch.setattr(SqlIdempotency, "put", broken)
        r = await live.client.post("/v1/notifications", headers={
            **shop["headers"], "Idempotency-Key": "k1"}, json={
            "to": {"user_id": "ada"}, "title": "never", "channels": ["in_app"]})
        assert r.status_code == 500
        await quiet(ws)
        monkeypatch.undo()
        await send(live, shop, ["ada"], "next")
        got = await frame(ws)
        assert (got["id"], got["data"]["title"]) == ("1", "next")  # no hole where it was


async def test_lost_publish_is_filled_from_the_store(live: Live, container: Any) -> None:
    shop = await create_app_with_key(live.client, "shop")
    tok = await token(live, shop, "ada")
    hub = container.streams.hub
    async with open_stream(live, f"/v1/users/me/stream?token={tok}") as ws:
        await frame(ws)

        with publishes_dropped(hub):
            await send(live, shop, ["ada"], "lost")
            await quiet(ws)
        await send(live, shop, ["ada"], "found")
        got = [await frame(ws) for _ in range(3)]
        assert [(g["id"], g["type"]) for g in got] == [
            ("1", "notification.created"), ("2", "notification.created"), ("2", "unread_count")]
        assert [g["data"].get("title") for g in got[:2]] == ["lost", "found"]
        assert got[2]["data"]["count"] == 2


async def test_slow_client_is_disconnected_not_buffered(live: Live, container: Any) -> None:
    shop = await create_app_with_key(live.client, "shop")
    tok = await token(live, shop, "ada")
    big = "x" * 16_000
    # A client that reads nothing: a small receive window, and no reading ahead.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(live.http.rsplit(":", 1)[1])))
    sock.setblocking(False)
    async with open_stream(live, f"/v1/users/me/stream?token={tok}", max_queue=1,
                           sock=sock) as ws:
        await frame(ws)
        # The client reads nothing while some megabytes of events pile up.
        registry = live.app.state.streams
        [listener] = registry.listeners
        for i in range(400):
            await send(live, shop, ["ada"], f"n{i}", body=big)
            if listener.closing:
                break
        assert listener.closing and listener.closing[0] == 4408, "the stream was never cut off"
        # What was already on the way arrives, then the close frame that says why.
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await frame(ws, wait=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
        for _ in range(100):
            if not registry.listeners:
                break
            await asyncio.sleep(0.1)
        assert not registry.listeners
    assert container.settings.stream_buffer_events == 8


async def test_an_event_published_twice_arrives_once(live: Live, container: Any,
                                                     monkeypatch: Any) -> None:
    shop = await create_app_with_key(live.client, "shop")
    tok = await token(live, shop, "ada")
    hub = container.streams.hub
    real = hub.publish

    async def twice(events: Any) -> None:
        await real(events)
        await real(events)

    async with open_stream(live, f"/v1/users/me/stream?token={tok}") as ws:
        await frame(ws)
        monkeypatch.setattr(hub, "publish", twice)
        await send(live, shop, ["ada"], "once")
        await send(live, shop, ["ada"], "twice")
        got = [await frame(ws) for _ in range(4)]
        assert [(g["id"], g["type"]) for g in got] == [
            ("1", "notification.created"), ("1", "unread_count"),
            ("2", "notification.created"), ("2", "unread_count")]
        await quiet(ws)


async def test_a_hole_that_cannot_be_filled_becomes_a_reset(live: Live, container: Any) -> None:
    shop = await create_app_with_key(live.client, "shop")
    tok = await token(live, shop, "ada")
    hub = container.streams.hub
    async with open_stream(live, f"/v1/users/me/stream?token={tok}") as ws:
        await frame(ws)

        with publishes_dropped(hub):
            await send(live, shop, ["ada"], "lost and purged")
        async with container.store.transaction() as tx:  # gone from the store as well
            await tx.stream.purge(container.clock.now() + timedelta(seconds=1))
        container.clock.advance(1)
        await send(live, shop, ["ada"], "after the hole")
        got = [await frame(ws) for _ in range(3)]
        assert [(g["id"], g["type"]) for g in got] == [
            ("1", "stream.reset"), ("2", "notification.created"), ("2", "unread_count")]


async def test_a_deleted_user_made_again_continues_the_numbers(live: Live) -> None:
    shop = await create_app_with_key(live.client, "shop")
    await send(live, shop, ["ada"], "first life")
    assert (await live.client.delete("/v1/users/ada", headers=shop["headers"])).status_code == 204
    tok = await token(live, shop, "ada")
    async with open_stream(live, f"/v1/users/me/stream?token={tok}") as ws:
        assert await frame(ws) == {"id": "1", "type": "unread_count",
                                   "data": {"count": 0, "total": 0}}
        await send(live, shop, ["ada"], "second life")
        got = await frame(ws)
        assert (got["id"], got["data"]["title"]) == ("2", "second life")


async def test_a_hub_that_was_away_has_its_streams_catch_up(live: Live, container: Any) -> None:
    """A hub that lost its connection (Redis) says so once it is back: the streams read from
    the store what was published meanwhile, without waiting for the user's next event."""
    shop = await create_app_with_key(live.client, "shop")
    tok = await token(live, shop, "ada")
    hub = container.streams.hub
    async with open_stream(live, f"/v1/users/me/stream?token={tok}") as ws:
        await frame(ws)

        with publishes_dropped(hub):
            await send(live, shop, ["ada"], "while the hub was away")
            await quiet(ws)
        assert hub.resync(lambda app, user: user == "ada", container.clock.now()) == 1
        got = [await frame(ws) for _ in range(2)]
        assert [(g["id"], g["type"]) for g in got] == [
            ("1", "notification.created"), ("1", "unread_count")]
        assert got[0]["data"]["title"] == "while the hub was away"
        assert got[1]["data"]["count"] == 1
        # Nothing new: a second resync sends nothing.
        hub.resync(lambda app, user: True, container.clock.now())
        await quiet(ws)
