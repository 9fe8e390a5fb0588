"""The bare baseline of bench/realtime.py: a `websockets` server with nothing behind it, no
authentication, no store, no compression, holding idle connections and sending one message to
all of them with `websockets.broadcast` when asked.

    python bench/_realtime_bare.py --port P

Like Tidings' stream it greets each connection with a first (unread-count-like) message, so the
clients wait for the same thing before counting a connection as open. `GET /broadcast?marker=M`
(plain HTTP on the same port) sends `frame(M)` to every open connection and answers
`{"n", "started", "ended"}` once `broadcast` has written to every connection's transport.
`GET /healthz` answers 200.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

HELLO = orjson.dumps({"id": "0", "type": "unread_count", "data": {"count": 0, "total": 0}}).decode()


def frame(marker: str) -> str:
    """A message of the size and shape of Tidings' `notification.created` frame for a
    bench notification, with `marker` as its title."""
    return orjson.dumps({"id": "2", "type": "notification.created", "data": {
        "id": "01JBENCH0000000000000000000", "user_id": "user-00001",
        "to": {"user_ids": ["user-00001"]}, "channels": ["in_app"], "title": marker,
        "body": "Your order has shipped and arrives on Tuesday", "data": {}, "category": None,
        "created_at": "2026-01-01T00:00:00.000Z", "send_at": None, "status": "queued",
        "read_at": None, "sender_id": None, "ttl": None, "priority": "normal"}}).decode()


async def main(port: int) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.datastructures import Headers
    from websockets.http11 import Request, Response

    conns: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        conns.add(ws)
        try:
            await ws.send(HELLO)
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    def answer(body: dict[str, Any]) -> Response:
        data = orjson.dumps(body)
        return Response(HTTPStatus.OK.value, "OK",
                        Headers([("Content-Type", "application/json"),
                                 ("Content-Length", str(len(data))), ("Connection", "close")]),
                        data)

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/healthz":
            return answer({"connections": len(conns)})
        if url.path == "/broadcast":
            marker = parse_qs(url.query).get("marker", ["m"])[0]
            started = time.time()
            broadcast(conns, frame(marker))
            return answer({"n": len(conns), "started": started, "ended": time.time()})
        return None

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(handler, "127.0.0.1", port, compression=None,
                     process_request=process_request, server_header=None, backlog=4096) as server:
        await stop.wait()
        print(f"stopping with {len(conns)} connections open", file=sys.stderr, flush=True)
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.run(main(args.port))
    except ImportError:
        asyncio.run(main(args.port))
