"""Cluster mode, end to end: two `tidings serve --no-worker` processes share one PostgreSQL
schema and one Redis. A stream held by one node hears what a request to the other node did:
a new notification, and the revocation of the key the stream was opened with."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import _drop_schema, require_postgres, require_redis
from tests.e2e.test_serve import start, stop

pytestmark = pytest.mark.e2e

ADMIN_KEY = "tda_cluster-stream-admin-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
WAIT = 10.0  # a deadline for what takes milliseconds, not a measurement


async def frame(ws: ClientConnection) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
    return doc


async def closed_with(ws: ClientConnection) -> int | None:
    """Reads until the server closes the stream; its close code."""
    async def drain() -> None:
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            return
    await asyncio.wait_for(drain(), WAIT)
    return ws.close_code


async def scenario(port_a: int, port_b: int) -> None:
    ws_b = f"ws://127.0.0.1:{port_b}"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port_a}", timeout=10) as a:
        assert (await a.put("/v1/apps/shop", json={"name": "Shop"}, headers=ADMIN)).status_code == 201
        key = (await a.post("/v1/apps/shop/keys", headers=ADMIN)).json()
        doomed = (await a.post("/v1/apps/shop/keys", headers=ADMIN)).json()
        app = {"Authorization": f"Bearer {key['key']}"}
        assert (await a.put("/v1/users/ada", json={}, headers=app)).status_code in (200, 201)
        token = (await a.post("/v1/users/ada/tokens", headers=app)).json()["token"]

        async with connect(f"{ws_b}/v1/users/me/stream?token={token}", open_timeout=WAIT,
                           compression=None) as user_stream, \
                connect(f"{ws_b}/v1/users/ada/stream", open_timeout=WAIT, compression=None,
                        additional_headers={"Authorization": f"Bearer {doomed['key']}"}
                        ) as key_stream:
            # The first frame comes once the stream is subscribed on node B.
            first = await frame(user_stream)
            assert first["type"] == "unread_count" and first["data"]["count"] == 0
            assert (await frame(key_stream))["type"] == "unread_count"

            r = await a.post("/v1/notifications", headers=app, json={
                "to": {"user_ids": ["ada"]}, "channels": ["in_app"], "title": "Hello from A",
                "body": "across the cluster"})
            assert r.status_code == 202, r.text
            sent = r.json()["items"][0]
            created = await frame(user_stream)
            assert created["type"] == "notification.created"
            assert created["data"]["id"] == sent["id"]
            assert created["data"]["title"] == "Hello from A"
            assert int(created["id"]) > int(first["id"])
            count = await frame(user_stream)
            assert count["type"] == "unread_count" and count["id"] == created["id"]
            assert count["data"]["count"] == 1

            # Node B re-checks keys only hourly here: the close below is the kick through Redis.
            r = await a.delete(f"/v1/apps/shop/keys/{doomed['id']}", headers=ADMIN)
            assert r.status_code in (200, 204), r.text
            assert await closed_with(key_stream) == 4401

            # The user's own stream was opened with a token, not that key: it stays.
            await user_stream.send('{"type": "ping"}')
            assert (await frame(user_stream))["type"] == "pong"


def test_a_stream_on_one_node_hears_requests_to_another(tmp_path: Path) -> None:
    postgres = require_postgres()
    redis = require_redis()
    schema = f"e2e_{uuid.uuid4().hex[:10]}"
    env = {"TIDINGS_DATABASE_URL": postgres, "TIDINGS_DATABASE_SCHEMA": schema,
           "TIDINGS_SECRET_KEY": "cluster-stream-secret-key-0123456789-abcdef",
           "TIDINGS_ADMIN_KEY": ADMIN_KEY, "TIDINGS_RATE_LIMIT_PER_SECOND": "0",
           "TIDINGS_REDIS_URL": redis,
           "TIDINGS_REDIS_CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}",
           "TIDINGS_STREAM_RECHECK_SECONDS": "3600"}
    procs: list[subprocess.Popen[str]] = []
    try:
        node_a, port_a = start(tmp_path, env, "--no-worker")
        procs.append(node_a)
        node_b, port_b = start(tmp_path, env, "--no-worker")
        procs.append(node_b)
        asyncio.run(scenario(port_a, port_b))
    finally:
        outputs = [stop(p) for p in procs]
        asyncio.run(_drop_schema(schema))
    for out in outputs:
        assert "Traceback" not in out, out
