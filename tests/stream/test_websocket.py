"""The WebSocket stream end to end, on SQLite and PostgreSQL: what a client sees, in order."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ADMIN, create_app_with_key
from tests.stream.conftest import Live, frame, open_stream, quiet


async def token(live: Live, app: dict[str, Any], user: str) -> str:
    r = await live.client.post(f"/v1/users/{user}/tokens", headers=app["headers"])
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


async def send(live: Live, app: dict[str, Any], users: list[str], title: str,
               channels: tuple[str, ...] = ("in_app",), **extra: Any) -> list[dict[str, Any]]:
    r = await live.client.post("/v1/notifications", headers=app["headers"], json={
        "to": {"user_ids": users}, "title": title, "channels": list(channels), **extra})
    assert r.status_code == 202, r.text
    return list(r.json()["items"])


@pytest.fixture
async def shop(live: Live) -> dict[str, Any]:
    return await create_app_with_key(live.client, "shop")


async def test_created_read_and_counts_in_order(live: Live, shop: dict[str, Any]) -> None:
    tok = await token(live, shop, "ada")
    async with open_stream(live, f"/v1/users/me/stream?token={tok}") as ws:
        first = await frame(ws)
        assert first == {"id": "0", "type": "unread_count", "data": {"count": 0, "total": 0}}
        [n] = await send(live, shop, ["ada"], "hello", data={"order": 7})
        created = await frame(ws)
        assert created["type"] == "notification.created" and created["id"] == "1"
        listed = (await live.client.get("/v1/users/ada/notifications",
                                        headers=shop["headers"])).json()["items"][0]
        assert created["data"] == listed and created["data"]["id"] == n["id"]
        assert await frame(ws) == {"id": "1", "type": "unread_count",
                                   "data": {"count": 1, "total": 1}}
        # Push alone is not the in-app feed: no event, although the total count moves.
        await send(live, shop, ["ada"], "push only", ("push",))
        await quiet(ws)
        r = await live.client.post(f"/v1/users/me/notifications/{n['id']}/read",
                                   headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 200
        read = await frame(ws)
        assert read["type"] == "notification.read" and read["id"] == "2"
        assert read["data"]["notification_id"] == n["id"] and read["data"]["read_at"]
        assert (await frame(ws))["data"] == {"count": 0, "total": 1}
        # Reading it again changes nothing and says nothing.
        await live.client.post(f"/v1/users/me/notifications/{n['id']}/read",
                               headers={"Authorization": f"Bearer {tok}"})
        await send(live, shop, ["ada"], "two")
        assert (await frame(ws))["id"] == "3"
        await frame(ws)
        r = await live.client.post("/v1/users/ada/notifications/read-all",
                                   headers=shop["headers"], json={})
        assert r.json()["updated"] == 2
        everything = await frame(ws)
        assert everything["type"] == "notification.read" and everything["id"] == "4"
        assert everything["data"]["all"] is True and everything["data"]["updated"] == 2
        assert (await frame(ws))["data"] == {"count": 0, "total": 0}


async def test_every_connection_of_the_user_and_nobody_else(live: Live,
                                                            shop: dict[str, Any]) -> None:
    other_app = await create_app_with_key(live.client, "other")
    ada = await token(live, shop, "ada")
    async with open_stream(live, f"/v1/users/me/stream?token={ada}") as phone, \
            open_stream(live, "/v1/users/me/stream",
                        additional_headers={"Authorization": f"Bearer {ada}"}) as tab, \
            open_stream(live, "/v1/users/ada/stream", additional_headers=shop["headers"]) as backend, \
            open_stream(live, f"/v1/users/me/stream?token={await token(live, shop, 'bob')}") as bob, \
            open_stream(live, f"/v1/users/me/stream?token={await token(live, other_app, 'ada')}") as twin:
        for ws in (phone, tab, backend, bob, twin):
            assert (await frame(ws))["type"] == "unread_count"
        await send(live, shop, ["ada"], "for ada")
        for ws in (phone, tab, backend):
            got = await frame(ws)
            assert got["type"] == "notification.created" and got["data"]["title"] == "for ada"
            assert (await frame(ws))["type"] == "unread_count"
        await quiet(bob)
        await quiet(twin)  # the same user id in another app is another user


async def test_resume_replays_what_was_missed_without_gap_or_duplicate(
        live: Live, shop: dict[str, Any]) -> None:
    tok = await token(live, shop, "ada")
    async with open_stream(live, f"/v1/users/me/stream?token={tok}") as ws:
        await frame(ws)
        await send(live, shop, ["ada"], "one")
        seen = await frame(ws)
        await frame(ws)
    # Away: two more arrive, one is read.
    await send(live, shop, ["ada"], "two")
    [three] = await send(live, shop, ["ada"], "three")
    await live.client.post(f"/v1/users/ada/notifications/{three['id']}/read",
                           headers=shop["headers"])
    async with open_stream(live, f"/v1/users/me/stream?token={tok}&after={seen['id']}") as ws:
        replayed = [await frame(ws) for _ in range(4)]
        assert [(f["id"], f["type"]) for f in replayed] == [
            ("2", "notification.created"), ("3", "notification.created"),
            ("4", "notification.read"), ("4", "unread_count")]
        assert [f["data"].get("title") for f in replayed[:2]] == ["two", "three"]
        assert replayed[3]["data"] == {"count": 2, "total": 2}
        await send(live, shop, ["ada"], "four")
        live_one = await frame(ws)
        assert live_one["id"] == "5" and live_one["data"]["title"] == "four"
        await frame(ws)
        await quiet(ws)
    # Resuming from the newest id replays nothing; from the future or garbage, a reset or 1008.
    async with open_stream(live, f"/v1/users/me/stream?token={tok}&after=5") as ws:
        assert await frame(ws) == {"id": "5", "type": "unread_count",
                                   "data": {"count": 3, "total": 3}}
    async with open_stream(live, f"/v1/users/me/stream?token={tok}&after=99") as ws:
        assert (await frame(ws))["type"] == "stream.reset"
        assert (await frame(ws))["type"] == "unread_count"
    async with open_stream(live, f"/v1/users/me/stream?token={tok}&after=abc") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await frame(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_events_purged_from_the_store_mean_reset(live: Live, shop: dict[str, Any],
                                                       container: Any, clock: Any) -> None:
    tok = await token(live, shop, "ada")
    for title in ("a", "b", "c"):
        await send(live, shop, ["ada"], title)
    clock.advance(2)
    await send(live, shop, ["ada"], "d")
    # The retention has passed for a, b and c (the clock is moved for the store only: tokens
    # are checked against the real time).
    clock.advance(container.settings.stream_retention_seconds - 1)
    assert await container.streams.purge() == 3
    clock.advance(-container.settings.stream_retention_seconds + 1)
    async with open_stream(live, f"/v1/users/me/stream?token={tok}&after=1") as ws:
        assert (await frame(ws))["type"] == "stream.reset"
    async with open_stream(live, f"/v1/users/me/stream?token={tok}&after=3") as ws:
        got = await frame(ws)
        assert (got["id"], got["data"]["title"]) == ("4", "d")


async def test_refusals(live: Live, shop: dict[str, Any]) -> None:
    # A browser passes the token in the URL and can read only close codes: 4401.
    for bad in ("nonsense", "eyJhbGciOiJIUzI1NiJ9.e30.x", shop["key"]):
        async with open_stream(live, f"/v1/users/me/stream?token={bad}") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await frame(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    # A client that sets headers gets the HTTP answer before any upgrade.
    with pytest.raises(InvalidStatus) as refused:
        async with open_stream(live, additional_headers={"Authorization": "Bearer nonsense"}):
            pass
    assert refused.value.response.status_code == 401
    assert b"unauthenticated" in refused.value.response.body
    with pytest.raises(InvalidStatus) as refused:
        async with open_stream(live, "/v1/users/ada/stream", additional_headers=ADMIN):
            pass
    assert refused.value.response.status_code == 403
    # A user token reaches only its own user.
    tok = await token(live, shop, "ada")
    with pytest.raises(InvalidStatus) as refused:
        async with open_stream(live, "/v1/users/bob/stream",
                               additional_headers={"Authorization": f"Bearer {tok}"}):
            pass
    assert refused.value.response.status_code == 404


async def test_revoked_key_and_deleted_user_close_open_streams(live: Live,
                                                               shop: dict[str, Any]) -> None:
    tok = await token(live, shop, "ada")
    assert (await live.client.put("/v1/users/bob", json={}, headers=shop["headers"])).is_success
    async with open_stream(live, f"/v1/users/me/stream?token={tok}") as ada, \
            open_stream(live, "/v1/users/bob/stream", additional_headers=shop["headers"]) as bob:
        await frame(ada)
        await frame(bob)
        r = await live.client.delete("/v1/users/bob", headers=shop["headers"])
        assert r.status_code == 204
        with pytest.raises(ConnectionClosed) as closed:
            await frame(bob)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
        r = await live.client.delete(f"/v1/apps/shop/keys/{shop['id']}", headers=ADMIN)
        assert r.status_code == 204
        with pytest.raises(ConnectionClosed) as closed:
            await frame(ada)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        assert "revoked" in closed.value.rcvd.reason


async def test_client_frames(live: Live, shop: dict[str, Any]) -> None:
    tok = await token(live, shop, "ada")
    async with open_stream(live, f"/v1/users/me/stream?token={tok}") as ws:
        await frame(ws)
        await ws.send('{"type": "ping"}')
        assert await frame(ws) == {"type": "pong"}
    cases = [("not json", 1003), ('{"type": "subscribe"}', 1003), (b"\x00\x01", 1003),
             ('{"type": "ping", "pad": "' + "x" * 5000 + '"}', 1009)]
    for payload, code in cases:
        async with open_stream(live, f"/v1/users/me/stream?token={tok}") as ws:
            await frame(ws)
            await ws.send(payload)
            with pytest.raises(ConnectionClosed) as closed:
                await frame(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == code, payload
    # The server is fine afterwards.
    async with open_stream(live, f"/v1/users/me/stream?token={tok}") as ws:
        assert (await frame(ws))["type"] == "unread_count"


async def test_a_stream_closes_when_its_token_expires(live: Live, shop: dict[str, Any],
                                                      clock: Any) -> None:
    r = await live.client.post("/v1/users/ada/tokens", headers=shop["headers"],
                               json={"ttl": 60})
    assert r.status_code == 200, r.text
    async with open_stream(live, f"/v1/users/me/stream?token={r.json()['token']}") as ws:
        await frame(ws)
        clock.advance(61)
        with pytest.raises(ConnectionClosed) as closed:
            await frame(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        assert "expired" in closed.value.rcvd.reason


async def test_an_expired_token_is_refused_although_requests_allow_some_skew(
        live: Live, shop: dict[str, Any], clock: Any) -> None:
    r = await live.client.post("/v1/users/ada/tokens", headers=shop["headers"], json={"ttl": 60})
    tok = r.json()["token"]
    clock.advance(70)  # past exp for the service's clock
    # A request still passes (PyJWT checks exp with 30 s of leeway, on the wall clock)...
    assert (await live.client.get("/v1/users/me/notifications",
                                  headers={"Authorization": f"Bearer {tok}"})).status_code == 200
    # ...but a stream is not opened only to be closed for it a second later.
    async with open_stream(live, f"/v1/users/me/stream?token={tok}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await frame(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_a_long_reason_fits_a_close_frame(live: Live, shop: dict[str, Any]) -> None:
    tok = await token(live, shop, "ada")
    long_id = "用" * 120
    async with open_stream(live, f"/v1/users/{long_id}/stream?token={tok}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await frame(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
        assert len(closed.value.rcvd.reason.encode()) <= 123
