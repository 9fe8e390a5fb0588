"""A real server on loopback for the stream tests: WebSocket close codes, frame limits and
denial responses are the server's protocol at work, which an in-process transport skips."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from tidings.bootstrap import Container
from tidings.entrypoints.http.app import create_app
from tidings.entrypoints.stream.front import Front
from tidings.entrypoints.stream.wsprotocol import WebSocketProtocol


@dataclass
class Live:
    http: str
    ws: str
    client: httpx.AsyncClient
    app: Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def live(container: Container) -> AsyncIterator[Live]:
    app = create_app(container)
    port = _free_port()
    s = container.settings
    config = uvicorn.Config(Front(app), host="127.0.0.1", port=port, log_level="warning",
                            ws=WebSocketProtocol, ws_per_message_deflate=False,
                            ws_max_size=s.stream_max_frame_bytes, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        try:
            yield Live(base, f"ws://127.0.0.1:{port}", client, app)
        finally:
            app.state.streams.shutdown()
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)


async def frame(ws: ClientConnection, wait: float = 5.0) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), wait))
    return doc


async def quiet(ws: ClientConnection, seconds: float = 0.3) -> None:
    """Nothing more arrives for a while."""
    with pytest.raises(TimeoutError):
        extra = await asyncio.wait_for(ws.recv(), seconds)
        pytest.fail(f"unexpected frame {extra!r}")


def open_stream(live: Live, path: str = "/v1/users/me/stream", **kwargs: Any) -> Any:
    return connect(live.ws + path, open_timeout=5, compression=None, **kwargs)
