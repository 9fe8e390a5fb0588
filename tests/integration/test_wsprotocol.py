"""The lean WebSocket protocol under a real uvicorn server, on both event loops Tidings runs on,
against the `websockets` client and, where the test must misbehave on the wire, a raw socket."""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import os
import socket
import struct
import sys
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
import uvloop
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.server import ServerState
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

from tidings.entrypoints.stream.wsprotocol import WebSocketProtocol, text_frames

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
Message = dict[str, Any]
GUARD = 10  # seconds: only a hang reaches it


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def on_both_loops(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[str], None]:
    """Run the test on the plain asyncio loop and on uvloop (what `tidings serve` runs)."""

    @pytest.mark.parametrize("loop", list(LOOPS))
    def run(loop: str) -> None:
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(test())

    run.__name__, run.__doc__ = test.__name__, test.__doc__
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serving(app: App, **options: Any) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, ws=WebSocketProtocol, lifespan="off",
                            log_level="warning", timeout_graceful_shutdown=5, **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, GUARD)


class Seen:
    """What the app saw, for the test to wait on."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Any] = asyncio.Queue()

    def put(self, item: Any) -> None:
        self.events.put_nowait(item)

    async def next(self) -> Any:
        return await asyncio.wait_for(self.events.get(), GUARD)


def accepting(seen: Seen, **accept: Any) -> App:
    """Accept, echo every message, record the scope and the disconnect."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.put(scope)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept", **accept})
        seen.put(send.__self__)
        while (message := await receive())["type"] == "websocket.receive":
            if message.get("text") == "close-4401":
                await send({"type": "websocket.close", "code": 4401, "reason": "bad token"})
                continue
            await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
        seen.put(message)
        seen.put(await receive())  # asked again after the disconnect: the same answer

    return app


# A raw client: the handshake, and frames written and read by hand.

def upgrade_request(path: str = "/raw") -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")


async def raw_open(url: str, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", int(url.rsplit(":", 1)[1])))
    return await asyncio.open_connection(sock=sock)


async def raw_connect(url: str, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await raw_open(url, rcvbuf)
    writer.write(upgrade_request())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, writer


def masked(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    mask = os.urandom(4)
    return bytes([0x80 | opcode]) + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await asyncio.wait_for(reader.readexactly(2), GUARD)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


# Tests


@on_both_loops
async def test_echo_text_bytes_and_fragmented_messages() -> None:
    seen = Seen()
    async with serving(accepting(seen)) as url, connect(url + "/v1/stream?after=7",
                                                        additional_headers={"X-Probe": "1"}) as ws:
        scope = await seen.next()
        assert (scope["type"], scope["path"], scope["query_string"]) == ("websocket", "/v1/stream", b"after=7")
        assert (b"x-probe", b"1") in scope["headers"]
        assert set(scope["extensions"]) == {"websocket.http.response", "tidings.send_now"}
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\xff")
        assert await ws.recv() == b"\x00\xff"
        await ws.send(["ab", "cd", "é"])
        assert await ws.recv() == "abcdé"
        await ws.send([b"\x01", b"\x02"])
        assert await ws.recv() == b"\x01\x02"
        pong = await ws.ping(b"hi")
        assert await asyncio.wait_for(pong, GUARD) >= 0


@on_both_loops
async def test_accept_subprotocol_and_headers_and_never_deflate() -> None:
    seen = Seen()
    app = accepting(seen, subprotocol="two", headers=[(b"x-stream", b"yes")])
    async with serving(app) as url, connect(url, subprotocols=["one", "two"]) as ws:  # type: ignore[list-item]
        scope = await seen.next()
        assert scope["subprotocols"] == ["one", "two"]
        assert ws.subprotocol == "two"
        assert ws.response is not None
        assert ws.response.headers["x-stream"] == "yes"
        # The client offered permessage-deflate, as browsers do: it is declined.
        assert any(name == b"sec-websocket-extensions" for name, _ in scope["headers"])
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


@on_both_loops
async def test_close_codes_both_ways() -> None:
    seen = Seen()
    async with serving(accepting(seen)) as url:
        async with connect(url) as ws:
            await seen.next()
            await ws.send("close-4401")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "bad token")
            await seen.next()
            disconnect = await seen.next()
            assert (disconnect["code"], disconnect["reason"]) == (4401, "bad token")
            assert await seen.next() == disconnect

        async with connect(url) as ws:
            await seen.next()
            await seen.next()
            await ws.close(4000, "bye")
            disconnect = await seen.next()
            assert disconnect == {"type": "websocket.disconnect", "code": 4000, "reason": "bye"}
            assert await seen.next() == disconnect


@on_both_loops
async def test_an_app_that_returns_or_fails_after_accepting_closes_1000_or_1011() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        if scope["path"] == "/fail":
            raise ValueError("boom")

    async with serving(app) as url:
        for path, code in (("/return", 1000), ("/fail", 1011)):
            async with connect(url + path) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == code, path


@on_both_loops
async def test_a_message_over_max_size_closes_with_1009() -> None:
    seen = Seen()
    async with serving(accepting(seen), ws_max_size=1024) as url, connect(url) as ws:
        await ws.send("x" * 1024)
        assert await ws.recv() == "x" * 1024
        await ws.send("x" * 1025)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await seen.next()
        await seen.next()
        assert (await seen.next())["code"] == 1009


@on_both_loops
async def test_invalid_utf8_closes_with_1007() -> None:
    seen = Seen()
    async with serving(accepting(seen)) as url:
        reader, writer = await raw_connect(url)
        writer.write(masked(0x1, b"\xff\xfe"))
        opcode, payload = await read_frame(reader)
        assert (opcode, payload[:2]) == (0x8, struct.pack("!H", 1007))
        assert await asyncio.wait_for(reader.read(), GUARD) == b""
        writer.close()
        await seen.next()
        await seen.next()
        assert (await seen.next())["code"] == 1007


@on_both_loops
async def test_denial_response_before_accept() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert "websocket.http.response" in scope["extensions"]
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "websocket.http.response.body", "body": b'{"error":', "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b'"nope"}'})

    async with serving(app) as url:
        with pytest.raises(InvalidStatus) as denied:
            await connect(url)
    response = denied.value.response
    assert response.status_code == 401
    assert response.body == b'{"error":"nope"}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-length"] == "16"


@on_both_loops
async def test_close_before_accept_is_403_and_failure_before_accept_is_500() -> None:
    seen = Seen()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        if scope["path"] == "/close":
            await send({"type": "websocket.close", "code": 4401})
            seen.put(await receive())
        elif scope["path"] == "/raise":
            raise ValueError("boom")
        # "/return": returns without an answer

    async with serving(app) as url:
        for path, status in (("/close", 403), ("/raise", 500), ("/return", 500)):
            with pytest.raises(InvalidStatus) as denied:
                await connect(url + path)
            assert denied.value.response.status_code == status, path
        assert (await seen.next())["type"] == "websocket.disconnect"


@on_both_loops
async def test_send_waits_while_the_client_does_not_read_and_a_disconnect_unblocks_it() -> None:
    seen = Seen()
    progress = {"sent": 0}
    chunk = b"x" * 65536

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        seen.put(send.__self__)
        try:
            for _ in range(2000):  # 128 MiB if nothing waits
                await send({"type": "websocket.send", "bytes": chunk})
                progress["sent"] += 1
            seen.put("sent everything")
        except ClientDisconnected as exc:
            seen.put(exc)
        seen.put(await receive())

    async with serving(app) as url:
        reader, writer = await raw_connect(url, rcvbuf=4096)  # and never read
        protocol = await seen.next()
        for _ in range(GUARD * 100):
            if protocol.drain is not None or progress["sent"] == 2000:
                break
            await asyncio.sleep(0.01)
        assert protocol.drain is not None, "the transport never paused"
        stalled = progress["sent"]
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert progress["sent"] == stalled < 2000
        assert seen.events.empty()
        assert protocol.send_now(text_frames(["not now"])) is False  # pushing back: nothing written
        assert protocol.transport.get_write_buffer_size() <= 4 * len(chunk)

        writer.transport.abort()  # the client goes away with unread data
        assert isinstance(await seen.next(), ClientDisconnected)
        disconnect = await seen.next()
        assert disconnect["type"] == "websocket.disconnect"
        assert disconnect["code"] == 1005
        del reader


@on_both_loops
async def test_send_now_writes_at_once_only_on_an_open_connection() -> None:
    seen = Seen()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        send_now = scope["extensions"]["tidings.send_now"]["send"]
        await receive()
        seen.put(send_now(text_frames(["too early"])))
        await send({"type": "websocket.accept"})
        seen.put(send_now(text_frames(["one", "é" * 200, "x" * 70_000])))
        await send({"type": "websocket.close", "code": 4000})
        seen.put(send_now(text_frames(["too late"])))

    async with serving(app) as url, connect(url) as ws:
        assert [await seen.next() for _ in range(3)] == [False, True, False]
        assert [await ws.recv() for _ in range(3)] == ["one", "é" * 200, "x" * 70_000]
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4000


@on_both_loops
async def test_a_client_that_drops_the_connection_gets_a_disconnect() -> None:
    seen = Seen()
    async with serving(accepting(seen)) as url:
        _, writer = await raw_connect(url)
        await seen.next()
        protocol = await seen.next()
        writer.close()
        disconnect = await seen.next()
        assert (disconnect["type"], disconnect["code"]) == ("websocket.disconnect", 1005)
        with pytest.raises(ClientDisconnected):
            await protocol.send({"type": "websocket.send", "text": "late"})


@on_both_loops
async def test_keepalive_pings_and_closes_1011_without_a_pong() -> None:
    seen = Seen()
    async with serving(accepting(seen), ws_ping_interval=0.05, ws_ping_timeout=0.5) as url:
        reader, writer = await raw_connect(url)
        for _ in range(3):
            opcode, payload = await read_frame(reader)
            assert opcode == 0x9
            writer.write(masked(0xA, payload))
        opcode, _ = await read_frame(reader)
        assert opcode == 0x9  # and no pong this time
        opcode, payload = await read_frame(reader)
        assert (opcode, payload[:2]) == (0x8, struct.pack("!H", 1011))
        assert await asyncio.wait_for(reader.read(), GUARD) == b""
        writer.close()
        await seen.next()
        await seen.next()
        assert (await seen.next())["code"] == 1011


@on_both_loops
async def test_nothing_of_the_handshake_is_kept() -> None:
    seen = Seen()
    async with serving(accepting(seen)) as url, connect(url) as ws:
        await seen.next()
        protocol = await seen.next()
        await ws.send("x")
        assert await ws.recv() == "x"
        kept = [type(o).__name__ for o in _reachable(protocol) if isinstance(o, Request | Response | Headers)]
        assert kept == []
        assert not hasattr(protocol, "__dict__")


def _reachable(protocol: WebSocketProtocol) -> list[object]:
    """What a connection holds of its own: all it reaches, short of what it shares with others
    (config, server state, transport, loop, futures, modules, classes, functions, loggers)."""
    shared = {id(protocol.config), id(protocol.server_state), id(protocol.app_state),
              id(protocol.transport)} | {id(vars(m)) for m in list(sys.modules.values())}
    opaque = (type, types.ModuleType, types.FunctionType, types.CodeType, types.BuiltinFunctionType,
              logging.Logger, asyncio.AbstractEventLoop, asyncio.Future)
    todo: list[object] = [protocol]
    found: dict[int, object] = {}
    while todo:
        obj = todo.pop()
        if id(obj) in found or id(obj) in shared or isinstance(obj, opaque):
            continue
        found[id(obj)] = obj
        todo.extend(gc.get_referents(obj))
    return list(found.values())


@on_both_loops
async def test_server_shutdown_closes_with_1001() -> None:
    seen = Seen()
    async with serving(accepting(seen)) as url:
        ws = await connect(url)
        await seen.next()
        await seen.next()
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert (await seen.next())["code"] == 1001


# Frames a client sends before the app answers its handshake (RFC 6455 4.1 lets it send them
# right behind its request): nothing may be written before the response, no answer may fail,
# and after a 101 they are handled. uvicorn hands the protocol the request alone and drops what
# came in the same read, so on the wire the frames follow in a later one; the same read is
# checked on the protocol itself.

PIPELINED = masked(0x9, b"p1") + masked(0x1, b"hi") + masked(0x8, struct.pack("!H", 1000) + b"bye")
REPLIES: dict[str, Message] = {
    "accept": {"type": "websocket.accept"},
    "deny": {"type": "websocket.http.response.start", "status": 401},
    "close": {"type": "websocket.close", "code": 4401},
}


def run_logging_errors(loop: str, test: Coroutine[Any, Any, None], caplog: pytest.LogCaptureFixture) -> list[str]:
    """Run the test on that loop; what the server logged at ERROR or above meanwhile."""
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "tidings.stream.protocol")]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    try:
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(test)
    finally:
        for logger in loggers:
            logger.removeHandler(caplog.handler)
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def answering_later(seen: Seen, answer: asyncio.Event, reply: str) -> App:
    """Answer the handshake with REPLIES[reply] once the test says so; then record messages."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        seen.put("connected")
        await answer.wait()
        try:
            await send(REPLIES[reply])
            if reply == "deny":
                await send({"type": "websocket.http.response.body", "body": b"no"})
        except ClientDisconnected:
            seen.put("gone")
        seen.put("answered")
        if reply == "accept":
            while (message := await receive())["type"] == "websocket.receive":
                seen.put(message)
            seen.put(message)

    return app


async def frames_then_answer(url: str, seen: Seen, answer: asyncio.Event,
                             frames: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send the request, then the frames once the app has it; let the app answer once the server
    had time to read them (what is checked is the order, whatever the timing)."""
    reader, writer = await raw_open(url)
    writer.write(upgrade_request())
    assert await seen.next() == "connected"
    writer.write(frames)
    await writer.drain()
    await asyncio.sleep(0.1)
    answer.set()
    return reader, writer


@pytest.mark.parametrize("loop", list(LOOPS))
def test_frames_sent_before_the_accept_are_handled_after_the_101(loop: str, caplog: pytest.LogCaptureFixture) -> None:
    async def test() -> None:
        seen, answer = Seen(), asyncio.Event()
        async with serving(answering_later(seen, answer, "accept"), log_config=None) as url:
            reader, writer = await frames_then_answer(url, seen, answer, PIPELINED)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
            assert head.startswith(b"HTTP/1.1 101 "), head
            assert await read_frame(reader) == (0xA, b"p1")
            assert await read_frame(reader) == (0x8, struct.pack("!H", 1000) + b"bye")
            assert await asyncio.wait_for(reader.read(), GUARD) == b""
            writer.close()
            assert await seen.next() == "answered"
            assert await seen.next() == {"type": "websocket.receive", "text": "hi"}
            assert await seen.next() == {"type": "websocket.disconnect", "code": 1000, "reason": "bye"}

    assert run_logging_errors(loop, test(), caplog) == []


@pytest.mark.parametrize("reply", ["deny", "close"])
@pytest.mark.parametrize("loop", list(LOOPS))
def test_a_denial_after_an_early_close_frame_is_sent_and_logs_nothing(
        loop: str, reply: str, caplog: pytest.LogCaptureFixture) -> None:
    async def test() -> None:
        seen, answer = Seen(), asyncio.Event()
        async with serving(answering_later(seen, answer, reply), log_config=None) as url:
            frames = masked(0x9, b"p1") + masked(0x8, struct.pack("!H", 1000))
            reader, writer = await frames_then_answer(url, seen, answer, frames)
            response = await asyncio.wait_for(reader.read(), GUARD)
            writer.close()
            assert response.startswith(b"HTTP/1.1 401 " if reply == "deny" else b"HTTP/1.1 403 "), response
            assert response.endswith(b"\r\n\r\nno" if reply == "deny" else b"\r\n\r\n"), response
            assert await seen.next() == "answered"

    assert run_logging_errors(loop, test(), caplog) == []


@pytest.mark.parametrize("loop", list(LOOPS))
def test_more_than_a_message_sent_before_the_answer_drops_the_connection(
        loop: str, caplog: pytest.LogCaptureFixture) -> None:
    async def test() -> None:
        seen, answer = Seen(), asyncio.Event()
        async with serving(answering_later(seen, answer, "accept"), log_config=None, ws_max_size=1024) as url:
            reader, writer = await frames_then_answer(url, seen, answer, masked(0x1, b"x" * 1000) * 3)
            assert await asyncio.wait_for(reader.read(), GUARD) == b""
            writer.close()
            assert await seen.next() == "gone"
            assert await seen.next() == "answered"
            assert (await seen.next())["type"] == "websocket.disconnect"

    assert run_logging_errors(loop, test(), caplog) == []


class RecordingTransport(asyncio.Transport):
    """Just enough of a transport to drive the protocol by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


def reads(request: bytes, frames: bytes, cut: str) -> list[bytes]:
    """The request and the frames behind it, as the reads that deliver them."""
    if cut == "bytewise":
        return [request[i:i + 1] for i in range(len(request) - 1)] + [request[-1:] + frames]
    at = {"whole": 0, "before-blank-line": -2, "inside-blank-line": -3}[cut]
    return [request[:at], request[at:] + frames]


@pytest.mark.parametrize("cut", ["whole", "before-blank-line", "inside-blank-line", "bytewise"])
@pytest.mark.parametrize("reply", ["accept", "deny", "close"])
def test_frames_in_the_same_read_as_the_request_wait_for_the_answer(
        reply: str, cut: str, caplog: pytest.LogCaptureFixture) -> None:
    async def test() -> None:
        seen, answer = Seen(), asyncio.Event()
        config = uvicorn.Config(answering_later(seen, answer, reply), ws=WebSocketProtocol, lifespan="off",
                                log_config=None, log_level="warning")
        protocol = WebSocketProtocol(config, ServerState(), {})
        transport = RecordingTransport()
        protocol.connection_made(transport)
        for data in reads(upgrade_request(), PIPELINED, cut):
            if data:
                protocol.data_received(data)
        assert await seen.next() == "connected"
        assert transport.written == b""
        answer.set()
        assert await seen.next() == "answered"
        head, _, rest = bytes(transport.written).partition(b"\r\n\r\n")
        if reply == "accept":
            assert head.startswith(b"HTTP/1.1 101 "), head
            assert rest == b"\x8a\x02p1" + b"\x88\x05" + struct.pack("!H", 1000) + b"bye"
            assert await seen.next() == {"type": "websocket.receive", "text": "hi"}
            assert await seen.next() == {"type": "websocket.disconnect", "code": 1000, "reason": "bye"}
        else:
            assert head.startswith(b"HTTP/1.1 401 " if reply == "deny" else b"HTTP/1.1 403 "), head
            assert rest == (b"no" if reply == "deny" else b"")
        assert transport.closing
        protocol.connection_lost(None)

    assert run_logging_errors("asyncio", test(), caplog) == []
