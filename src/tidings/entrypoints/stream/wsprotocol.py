"""A WebSocket protocol for uvicorn that keeps only what an open stream needs.

A stream is a WebSocket open, mostly idle, for as long as a tab is: what one costs at rest
decides how many a node holds. RSS growth per idle connection (`bench/ws_memory.py`, 10,000
connections, one core, same raw ASGI app): uvicorn's `websockets-sansio` ~20 KiB, the
`websockets` library's own server ~16 KiB, this class ~7 KiB. uvicorn keeps the handshake's
request, response and headers (also held by the sans-I/O parser's suspended frame), an
asyncio.Queue, two Events, an instance dict and a timer handle (~0.8 KiB on uvloop) per
connection. Here: a sans-I/O `ServerProtocol` whose parser is restarted after the handshake,
`__slots__`, a list of pending events and at most one future, header pairs shared across
connections, one keepalive clock per server. permessage-deflate is never negotiated: its zlib
pair costs ~45 KiB per connection, for events of a few hundred bytes.

Use: `uvicorn.Config(app, ws=WebSocketProtocol)`. ASGI semantics are those of uvicorn's
`websockets-sansio` (`websocket.http.response` denial, 403 when the app closes before accepting,
500 when it fails before), except: only `websocket.send` waits while the transport is paused (a
close goes out at once); a connection that does not finish closing within `close_timeout` is
aborted, so a peer that stops reading cannot hold it; server shutdown closes with 1001, not
1012; an app that returns or fails on an open connection closes it with 1000 or 1011; `receive`
after the disconnect returns the disconnect again; frames a client sends before the app answers
its handshake are read once the 101 is out, and a client that sends more than `ws_max_size` +
1 KiB of them is dropped.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import weakref
from collections import deque
from http import HTTPStatus
from http.client import responses
from typing import Any, cast
from urllib.parse import quote, unquote

from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected, get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN, Protocol
from websockets.server import ServerProtocol

Message = dict[str, Any]
logger = logging.getLogger("uvicorn.error")


def text_frames(texts: list[str] | list[bytes]) -> bytes:
    """Server-to-client text messages (str, or bytes that are UTF-8 already) as WebSocket
    frames (RFC 6455 5.2: final, unmasked, no extension, since this protocol never negotiates
    one), ready for `send_now`."""
    out = bytearray()
    for text in texts:
        payload = text.encode() if isinstance(text, str) else text
        n = len(payload)
        if n < 126:
            out += bytes((0x81, n))
        elif n < 65536:
            out += bytes((0x81, 126)) + n.to_bytes(2, "big")
        else:
            out += bytes((0x81, 127)) + n.to_bytes(8, "big")
        out += payload
    return bytes(out)
# The ASGI extension under which a connection offers `send_now` (see there).
SEND_NOW = "tidings.send_now"
# The sans-I/O layer says "connection open"/"closed" at INFO for every connection: per-connection
# lines belong at DEBUG on a server holding tens of thousands (the CLI sets its level).
protocol_logger = logging.getLogger("tidings.stream.protocol")

_HANDSHAKE, _DENYING, _OPEN, _CLOSED, _FAILED = range(5)  # _CLOSED: by the app; _FAILED: by us
# What a client may send behind its request, before the app answers, beyond one message of
# `ws_max_size`: room for a frame header and a few control frames.
_UNANSWERED_MARGIN = 1024
_current_loop = asyncio.get_running_loop

# Headers whose values repeat across connections: their (name, value) pairs are shared.
_SHARED_HEADERS = frozenset({
    "host", "connection", "upgrade", "origin", "user-agent", "pragma", "cache-control",
    "accept-encoding", "accept-language", "sec-websocket-version", "sec-websocket-extensions",
    "sec-websocket-protocol"})
_shared: dict[tuple[str, str], tuple[bytes, bytes]] = {}


def _header(name: str, value: str) -> tuple[bytes, bytes]:
    # websockets < 17 decodes values with surrogateescape, >= 17 with latin-1: this undoes both.
    name = name.lower()
    if name not in _SHARED_HEADERS:
        return name.encode("ascii"), value.encode("latin-1", "surrogateescape")
    pair = _shared.get((name, value))
    if pair is None:
        pair = name.encode("ascii"), value.encode("latin-1", "surrogateescape")
        # Short values only, and a bounded number: anyone can send headers, before any
        # authentication, and the table lives as long as the process.
        if len(value) <= 256 and len(_shared) < 4096:
            _shared[name, value] = pair
    return pair


class _Clock:
    """The keepalive deadlines of every connection of a server behind one timer handle (one per
    connection costs ~0.8 KiB on uvloop). An entry is [when, protocol, payload]: a ping to send
    (payload None) or a pong awaited. A queue per delay, so appending keeps each in order; an
    entry its connection replaced or dropped has protocol None and is skipped when due."""

    __slots__ = ("handle", "queues", "when")

    def __init__(self) -> None:
        self.queues: dict[float, deque[list[Any]]] = {}
        self.handle: asyncio.TimerHandle | None = None
        self.when = math.inf

    def add(self, delay: float, protocol: WebSocketProtocol, payload: bytes | None) -> list[Any]:
        when = _current_loop().time() + delay
        entry: list[Any] = [when, protocol, payload]
        self.queues.setdefault(delay, deque()).append(entry)
        if when < self.when:
            self._arm(when)
        return entry

    def _arm(self, when: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.when, self.handle = when, _current_loop().call_at(when, self._fire)

    def _fire(self) -> None:
        self.handle, self.when = None, math.inf
        now = _current_loop().time() + 0.05  # what is due within 50 ms goes now, in one batch
        for delay, queue in list(self.queues.items()):
            while queue and queue[0][0] <= now:
                _, protocol, payload = queue.popleft()
                if protocol is not None:
                    protocol._keepalive_due(payload)
            if not queue:
                del self.queues[delay]
        if self.queues:
            first = min(queue[0][0] for queue in self.queues.values())
            if first < self.when:
                self._arm(first)


_clocks: weakref.WeakKeyDictionary[ServerState, _Clock] = weakref.WeakKeyDictionary()


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection served to an ASGI app, lean at rest."""

    __slots__ = ("accept_key", "app_state", "close_handle", "config", "conn", "denial", "drain",
                 "gone", "keepalive", "lost", "pending", "phase", "read_paused", "scope",
                 "server_state", "text", "transport", "unread", "waiter")

    close_timeout = 10.0  # seconds for the closing handshake before the connection is aborted
    shutdown_code = 1001

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not config.loaded:
            config.load()
        self.config, self.server_state, self.app_state = config, server_state, app_state
        self.transport: asyncio.Transport
        self.conn = ServerProtocol(max_size=config.ws_max_size, logger=protocol_logger)
        self.phase = _HANDSHAKE
        self.lost = self.read_paused = self.text = False  # text: the message being read is text
        self.scope: dict[str, Any] | None = None  # until the app answers the handshake
        self.accept_key: str | None = None
        self.denial: tuple[int, list[tuple[str, str]], bytearray] | None = None
        self.gone: Message | None = None  # the disconnect, once known
        self.pending: list[Message] | None = None  # what the app has not received yet
        self.waiter: asyncio.Future[None] | None = None  # the app waits in receive()
        self.drain: asyncio.Future[None] | None = None  # the transport is paused for writing
        # Bytes not handled yet: what came behind the request until the app answers it, then
        # the frames so far of a fragmented message.
        self.unread: bytearray | None = None
        self.keepalive: list[Any] | None = None  # its entry in the server's _Clock
        self.close_handle: asyncio.TimerHandle | None = None  # aborts a close that takes too long

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server_state.connections.add(self)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.unread = None
        self.server_state.connections.discard(self)
        self._keep_alive(None)
        if self.close_handle is not None:
            self.close_handle.cancel()
            self.close_handle = None
        self._disconnect(1005 if self.phase == _OPEN else 1006)
        self.resume_writing()  # asyncio does not resume a transport lost while paused

    def eof_received(self) -> None:
        self._close_transport()  # also when the peer, half-closed, reads no more

    def pause_writing(self) -> None:
        if self.drain is None:
            self.drain = _current_loop().create_future()

    def resume_writing(self) -> None:
        drain, self.drain = self.drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.phase == _HANDSHAKE or self.phase == _DENYING:
            data = self._before_answer(data)
            if not data:
                return
        self._receive(data)

    def _before_answer(self, data: bytes) -> bytes:
        """What of `data` the parser may take before the app answers the handshake.

        The sans-I/O layer answers frames as it parses them: a pong to a ping, the end of the
        stream after a close. Parsed before the app answers, they would be written before the
        response, or forbid it. A client may send frames right behind its request (RFC 6455
        4.1): they are held, and parsed once the 101 is out, or dropped with a denial. The
        parser is fed no further than the request's end, its first blank line: from a line
        start, the first CRLF CRLF (uvicorn hands over the request alone, in one piece); else,
        a line at a time."""
        reader, start = self.conn.reader, 0
        while self.accept_key is None and self.phase == _HANDSHAKE:  # the request is not read yet
            if reader.buffer or data.startswith(b"\r\n", start):  # mid-line, or the blank line
                end = data.find(b"\n", start) + 1
            else:
                blank = data.find(b"\r\n\r\n", start)
                end = blank + 4 if blank >= 0 else 0
            if not end:
                return data[start:]
            self._receive(data[start:end])
            start = end
        if self.phase == _HANDSHAKE:
            unread = self.unread
            if unread is None:
                unread = self.unread = bytearray()
            unread += data[start:]
            if len(unread) > self.config.ws_max_size + _UNANSWERED_MARGIN:
                self.unread = None
                self.phase = _FAILED
                self._close_transport()
            return b""
        return b"" if self.phase == _DENYING else data[start:]

    def _receive(self, data: bytes | bytearray) -> None:
        conn = self.conn
        conn.receive_data(data)
        for event in conn.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Request):
                self._connect(event)
        if conn.parser_exc is not None and self.gone is None:
            sent = conn.close_sent
            self._disconnect(sent.code if sent else 1006, sent.reason if sent else "")
            if self.phase == _OPEN:
                self.phase = _FAILED
        self._flush()

    def shutdown(self) -> None:
        """Called by uvicorn when the server stops."""
        self._keep_alive(None)
        if self.phase == _OPEN and self.conn.state is OPEN:
            self._send_close(self.shutdown_code, "")
        elif self.phase == _HANDSHAKE:
            self._reject(500, "Internal Server Error")
            self.phase = _FAILED
        self._close_transport()

    # Incoming

    def _connect(self, request: Request) -> None:
        conn = self.conn
        response = conn.accept(request)
        if response.status_code != 101:
            self.phase = _FAILED
            conn.send_response(response)
            return
        # The parser waits at a frame boundary (it is fed no further than the request), its
        # frame holding the request: restart it.
        conn.parser = Protocol.parse(conn)
        next(conn.parser)
        self.accept_key = response.headers["Sec-WebSocket-Accept"]
        config, transport = self.config, self.transport
        raw_path, _, query = request.path.partition("?")
        root = config.root_path
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": config.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(transport) else "ws",
            "server": get_local_addr(transport),
            "client": get_remote_addr(transport),
            "root_path": root,
            "path": root + unquote(raw_path),
            "raw_path": (root + raw_path).encode("ascii"),
            "query_string": query.encode("ascii"),
            "headers": [_header(k, v) for k, v in request.headers.raw_items()],
            "subprotocols": [p.strip() for v in request.headers.get_all("Sec-WebSocket-Protocol")
                             for p in v.split(",")],
            "state": self.app_state.copy(),
            "extensions": {"websocket.http.response": {},
                           SEND_NOW: {"send": self.send_now}},
        }
        self.scope = scope
        self._push({"type": "websocket.connect"})
        task = _current_loop().create_task(self._run(scope))
        self.server_state.tasks.add(task)
        task.add_done_callback(self.server_state.tasks.discard)

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self.text = opcode is Opcode.TEXT
            if frame.fin:
                self._message(bytes(frame.data))
            else:
                self.unread = bytearray(frame.data)
        elif opcode is Opcode.CONT and self.unread is not None:
            self.unread += frame.data
            if frame.fin:
                data, self.unread = bytes(self.unread), None
                self._message(data)
        elif opcode is Opcode.PONG:
            self._pong(bytes(frame.data))
        elif opcode is Opcode.CLOSE and self.gone is None:
            rcvd = self.conn.close_rcvd
            self._disconnect(rcvd.code if rcvd else 1005, rcvd.reason if rcvd else "")
        # A ping's pong is queued by the sans-I/O layer and written by _flush.

    def _message(self, data: bytes) -> None:
        if self.phase != _OPEN:
            return  # past the close: read on only to see the peer's close frame
        if self.text:
            try:
                message: Message = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                self.conn.fail(1007, "invalid UTF-8")
                self._disconnect(1007, "invalid UTF-8")
                self.phase = _FAILED
                return
        else:
            message = {"type": "websocket.receive", "bytes": bytes(data)}
        self._push(message)
        waiter = self.waiter
        if (waiter is None or waiter.done()) and not self.read_paused:
            self.read_paused = True  # the app is busy: let TCP push back until it catches up
            self.transport.pause_reading()

    def _push(self, message: Message) -> None:
        if self.pending is None:
            self.pending = [message]
        else:
            self.pending.append(message)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _disconnect(self, code: int, reason: str = "") -> None:
        if self.gone is None:
            self.gone = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._push(self.gone)

    # Outgoing

    def _flush(self) -> None:
        writes = self.conn.data_to_send()
        if not writes or self.transport.is_closing():
            return
        self.transport.write(b"".join(writes))
        if writes[-1] == b"":  # the sans-I/O layer's end of stream
            self._close_transport()

    def _close_transport(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()
        if self.close_handle is None and not self.lost:
            self.close_handle = _current_loop().call_later(self.close_timeout, self.transport.abort)

    def _send_close(self, code: int, reason: str) -> None:
        self._disconnect(code, reason)
        self.conn.send_close(code, reason)
        self.phase = _CLOSED
        self._flush()
        if self.read_paused and not self.lost:
            self.read_paused = False
            self.transport.resume_reading()  # to see the peer's close frame
        if self.close_handle is None:
            self.close_handle = _current_loop().call_later(self.close_timeout, self.transport.abort)

    def _reject(self, status: int, text: str) -> None:
        self._respond(self.conn.reject(status, text))
        self.phase = _CLOSED

    def _respond(self, response: Response) -> None:
        """Send a handshake response other than 101, unless the connection is going already
        (the sans-I/O layer sent its end of stream for a request it could not read)."""
        self.unread = None
        if self.lost or self.conn.eof_sent or self.transport.is_closing():
            self._close_transport()
        else:
            self.conn.send_response(response)
            self._flush()

    def _log(self, outcome: str) -> None:
        scope = self.scope
        if scope is not None:
            client = "{}:{}".format(*scope["client"]) if scope["client"] else ""
            # Never the query string: browsers put their user token there.
            protocol_logger.debug('%s - "WebSocket %s" %s', client, quote(scope["path"]), outcome)
        self.scope = None

    # Keepalive

    def _keep_alive(self, delay: float | None, payload: bytes | None = None) -> None:
        """Arm the next ping (no payload) or the deadline of the pong to `payload`; or disarm."""
        if self.keepalive is not None:
            self.keepalive[1] = None
            self.keepalive = None
        if delay is not None and (delay > 0 or payload is not None):
            clock = _clocks.get(self.server_state) or _clocks.setdefault(self.server_state, _Clock())
            self.keepalive = clock.add(delay, self, payload)

    def _keepalive_due(self, payload: bytes | None) -> None:
        self.keepalive = None
        if self.phase != _OPEN or self.conn.state is not OPEN or self.transport.is_closing():
            return
        if payload is not None:
            self.conn.fail(1011, "keepalive ping timeout")
            self._disconnect(1011, "keepalive ping timeout")
            self.phase = _FAILED
            self._flush()
            return
        payload = random.getrandbits(32).to_bytes(4, "big")
        self.conn.send_ping(payload)
        self._flush()
        timeout = self.config.ws_ping_timeout
        if timeout is None:
            self._keep_alive(self.config.ws_ping_interval)
        else:
            self._keep_alive(timeout, payload)

    def _pong(self, payload: bytes) -> None:
        if self.keepalive is not None and self.keepalive[2] == payload:
            self._keep_alive(self.config.ws_ping_interval)

    # ASGI

    async def _run(self, scope: dict[str, Any]) -> None:
        failed = False
        try:
            result = await self.config.loaded_app(scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            failed = True
            logger.exception("Exception in ASGI application\n")
        else:
            if self.phase == _HANDSHAKE:
                logger.error("ASGI callable returned without completing handshake.")
            elif result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
        del scope
        if self.phase == _HANDSHAKE:
            self._log("500")
            self._reject(500, "Internal Server Error")
        elif self.phase == _OPEN and self.conn.state is OPEN and not self.lost:
            self._send_close(1011 if failed else 1000, "")
            return  # the peer's close frame, or close_timeout, ends the connection
        if self.close_handle is None:
            self._close_transport()

    async def receive(self) -> Message:
        while not self.pending:
            if self.gone is not None:
                return self.gone
            waiter = self.waiter = _current_loop().create_future()
            try:
                await waiter
            finally:
                self.waiter = None
        message = self.pending.pop(0)
        if not self.pending:
            self.pending = None
            if self.read_paused and not self.lost:
                self.read_paused = False
                self.transport.resume_reading()
        return message

    def send_now(self, frames: bytes) -> bool:
        """Write ready-made frames (`text_frames`) at once if the connection is open and not
        pushing back; False (nothing written) otherwise, and the caller sends the ASGI way.
        A broadcast frames each event once and writes it to thousands of idle connections
        from one loop this way, without waking a task per connection."""
        if self.phase != _OPEN or self.lost or self.drain is not None \
                or self.conn.state is not OPEN or self.transport.is_closing():
            return False
        self.transport.write(frames)
        return True

    async def send(self, message: Message) -> None:
        kind, waited = message["type"], False
        if kind == "websocket.send":
            while (drain := self.drain) is not None:
                waited = True
                await asyncio.shield(drain)
        phase = self.phase
        if self.lost or phase == _FAILED or (waited and phase == _CLOSED):
            raise ClientDisconnected()
        if phase == _HANDSHAKE:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._log("403")
                self._disconnect(1006)
                self._reject(HTTPStatus.FORBIDDEN, "")
            elif kind == "websocket.http.response.start":
                status = message["status"]
                if not 100 <= status < 600:
                    raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
                self._log(str(status))
                headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in message.get("headers", [])]
                self.denial = (status, headers, bytearray())
                self.phase = _DENYING
                self.unread = None
            else:
                raise RuntimeError(f"Expected 'websocket.accept', 'websocket.close' or "
                                   f"'websocket.http.response.start' but got '{kind}'.")
        elif phase == _DENYING:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"Expected ASGI message 'websocket.http.response.body' but got '{kind}'.")
            self._deny(message)
        elif phase == _OPEN:
            if kind == "websocket.send":
                try:
                    if (data := message.get("bytes")) is not None:
                        self.conn.send_binary(data)
                    elif (text := message.get("text")) is not None:
                        self.conn.send_text(text.encode())
                except InvalidState:
                    raise ClientDisconnected() from None
                self._flush()
            elif kind == "websocket.close":
                if not self.transport.is_closing() and self.conn.state is OPEN:
                    self._send_close(message.get("code", 1000), message.get("reason") or "")
            else:
                raise RuntimeError(f"Expected 'websocket.send' or 'websocket.close', but got '{kind}'.")
        else:
            raise RuntimeError(f"Unexpected ASGI message '{kind}', after sending 'websocket.close'.")

    def _accept(self, message: Message) -> None:
        self._log("[accepted]")
        extra = self.server_state.default_headers + list(message.get("headers", []))
        headers = Headers([("Upgrade", "websocket"), ("Connection", "Upgrade"),
                           ("Sec-WebSocket-Accept", self.accept_key or "")])
        headers.update((n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in extra)
        if subprotocol := message.get("subprotocol"):
            headers["Sec-WebSocket-Protocol"] = subprotocol
        self.accept_key = None
        if self.transport.is_closing() or self.conn.eof_sent:
            self.unread = None
            self.phase = _FAILED
            return
        self.conn.send_response(Response(101, "Switching Protocols", headers))
        self.phase = _OPEN
        self._flush()
        self._keep_alive(self.config.ws_ping_interval)
        unread, self.unread = self.unread, None
        if unread:
            self._receive(unread)  # what the client sent behind its request

    def _deny(self, message: Message) -> None:
        assert self.denial is not None
        status, header_list, body = self.denial
        body += message.get("body", b"")
        if message.get("more_body", False):
            return
        self.denial = None
        headers = Headers(header_list)
        headers.setdefault("Date", email.utils.formatdate(usegmt=True))
        headers.setdefault("Connection", "close")
        headers.setdefault("Content-Length", str(len(body)))
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        self._disconnect(1006)
        self.phase = _CLOSED
        self._respond(Response(status, responses.get(status, ""), headers, bytes(body)))
