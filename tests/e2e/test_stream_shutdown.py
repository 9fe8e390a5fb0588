"""Stopping `tidings serve` with streams open: it ends them and exits, instead of waiting for
event streams that never end by themselves."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.test_serve import start

pytestmark = pytest.mark.e2e

ADMIN_KEY = "tda_stream-shutdown-admin-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def test_sigint_closes_open_streams_and_exits(tmp_path: Path) -> None:
    proc, port = start(tmp_path, {"TIDINGS_ADMIN_KEY": ADMIN_KEY})
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            assert (await c.put("/v1/apps/shop", json={"name": "Shop"}, headers=ADMIN)).is_success
            key = (await c.post("/v1/apps/shop/keys", headers=ADMIN)).json()["key"]
            token = (await c.post("/v1/users/ada/tokens",
                                  headers={"Authorization": f"Bearer {key}"})).json()["token"]
            async with connect(f"ws://127.0.0.1:{port}/v1/users/me/stream?token={token}",
                               open_timeout=10, compression=None) as ws, \
                    c.stream("GET", "/v1/users/me/events", params={"token": token}) as sse:
                await asyncio.wait_for(ws.recv(), 10)
                lines = sse.aiter_lines()
                while "unread_count" not in await asyncio.wait_for(lines.__anext__(), 10):
                    pass
                started = time.monotonic()
                proc.send_signal(signal.SIGINT)
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                assert ws.close_code == 1001
                rest = [line async for line in lines]  # the response ends
                assert any('"stream.closed"' in line and "1001" in line for line in rest), rest
                out, _ = await asyncio.to_thread(proc.communicate, None, 15)
                # Exiting on SIGINT the conventional way (128 + 2), without a traceback.
                assert proc.returncode in (0, 130), out
                assert "Traceback" not in out and "ERROR" not in out, out
                assert time.monotonic() - started < 15  # a deadline, not a measurement
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
