"""What the loopback doubles share: `async with` to start and stop them, an aiohttp application
served on 127.0.0.1 at a port the system picks (over TLS when given a server context), the count
of connections and of requests in flight, the queue of answers a test scripts, and the broken
answers (not HTTP at all, or a body cut short) that a client must survive.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, Self, TypeVar

from aiohttp import web


class Loopback:
    """A double with `start()` and `close()`, used as `async with Double() as double:`."""

    async def start(self) -> Self:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AiohttpDouble(Loopback):
    """An aiohttp application (`application()`) on 127.0.0.1, on a port the system picks, over
    TLS when `server_ssl` is set. A handler wrapped in `with self.serving(request):` counts the
    client connections (`peers`) and the most requests in flight at once (`max_in_flight`)."""

    server_ssl: ssl.SSLContext | None = None

    def __init__(self) -> None:
        self.port = 0
        self.peers: set[tuple[str, int]] = set()  # client addresses: one per connection
        self.in_flight = 0
        self.max_in_flight = 0
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return f"{'https' if self.server_ssl else 'http'}://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        self._runner = web.AppRunner(self.application(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.server_ssl).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @contextmanager
    def serving(self, request: web.Request) -> Iterator[None]:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peers.add(tuple(peer[:2]))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1


# --- scripted answers ---------------------------------------------------------------------------

class Scripted(Protocol):
    times: int | None  # how many more times it is given; None: every time


S = TypeVar("S", bound=Scripted)


def take(queue: list[S] | None, where: Callable[[S], bool] = lambda _: True) -> S | None:
    """The first script of `queue` that `where` accepts, counted once and dropped from the queue
    when used up; None when there is none."""
    for index, script in enumerate(queue or ()):
        if not where(script):
            continue
        if script.times is not None:
            script.times -= 1
            if script.times <= 0:
                assert queue is not None
                del queue[index]
        return script
    return None


# --- broken answers -----------------------------------------------------------------------------

def garbage(request: web.Request, raw: bytes, **answer: Any) -> web.Response:
    """Write `raw` instead of an HTTP answer and hang up: the client cannot read a status."""
    if request.transport is not None:
        request.transport.write(raw)
        request.transport.close()
    return web.Response(**answer)


async def truncated(request: web.Request, content_type: str, start: bytes) -> web.StreamResponse:
    """A 200 that announces 200 bytes of body, sends `start` and hangs up."""
    resp = web.StreamResponse(status=200, headers={"Content-Type": content_type})
    resp.content_length = 200
    await resp.prepare(request)
    await resp.write(start)
    if request.transport is not None:
        request.transport.close()
    return resp
