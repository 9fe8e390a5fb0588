"""A small HTTP/2 client for providers that speak HTTP/2 only (APNs): many requests multiplexed
on one TLS connection per origin.

It drives the `h2` state machine from an asyncio Protocol, so there is no task per connection or
per request: a request is a future resolved by `data_received`, and every frame produced in one
event-loop turn leaves in one `transport.write`. A second connection is opened only when the
server's SETTINGS_MAX_CONCURRENT_STREAMS is used up on the first.

Every failure to get a complete answer raises an `H2Error`. None of them says the server did
not act on the request, so a caller that may send again (at-least-once) treats them all alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple, cast
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
from h2.errors import ErrorCodes
from hpack import HeaderTuple, NeverIndexedHeaderTuple

Header = tuple[bytes, bytes]

# Outbound headers go out as the caller built them (lowercase names, bytes): validating and
# normalising every list again costs more than the rest of a request's framing. Answers are
# read for their status and a header or two, which needs no validation of every field either.
_CONFIG = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                    validate_outbound_headers=False,
                                    normalize_outbound_headers=False,
                                    validate_inbound_headers=False)
_RECEIVE_WINDOW = 1 << 20  # per stream, and 16 times that for the connection
_LAST_STREAM_ID = (1 << 31) - 1024  # past this a connection drains and a new one is opened


class H2Error(Exception):
    """No complete answer: the server may or may not have acted on the request."""


class ConnectFailed(H2Error):
    pass


class ConnectionLost(H2Error):
    pass


class GoAway(H2Error):
    """The server sent GOAWAY. Streams above `last_stream_id` were not processed; the others
    may have been, but their answers are lost with the connection."""

    def __init__(self, message: str, error_code: int, last_stream_id: int, debug: bytes) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.last_stream_id = last_stream_id
        self.debug = debug


class StreamReset(H2Error):
    def __init__(self, message: str, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


class RequestTimeout(H2Error, TimeoutError):
    pass


class Response(NamedTuple):
    status: int
    headers: list[Header]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class _PlainEncoder(hpack.Encoder):
    """HPACK without Huffman coding. Huffman in pure Python costs more per request than the
    rest of its framing, to save a few bytes of the values that are new on every request (a
    path with a device token, a message id); the repeated ones are indexed anyway."""

    def encode(self, headers: Any, huffman: bool = False) -> bytes:
        return super().encode(headers, huffman=False)


class _H2Connection(h2.connection.H2Connection):
    """h2 counts the open streams by walking all of them each time one is opened, which makes
    a thousand streams in flight cost a million steps. The owner counts them instead
    (`in_flight`, never below h2's own count), and h2's walk, which also forgets closed
    streams, runs only once closed ones pile up. Closed streams are remembered (to tell late
    frames from protocol errors) by the thousand, not h2's 65,536: that was 11 MiB a
    connection."""

    MAX_CLOSED_STREAMS = 1024

    def __init__(self) -> None:
        super().__init__(config=_CONFIG)
        self.encoder = _PlainEncoder()
        self.in_flight = 0

    @property
    def open_outbound_streams(self) -> int:
        if len(self.streams) > 2 * self.in_flight + 64:
            return self._open_streams(1)
        return self.in_flight


class _Stream:
    __slots__ = ("chunks", "future", "headers", "pending", "timer")

    def __init__(self, future: asyncio.Future[Response]) -> None:
        self.future = future
        self.headers: list[Header] | None = None
        self.chunks: list[bytes] = []
        self.pending: memoryview | None = None  # request body waiting for flow-control window
        self.timer: asyncio.TimerHandle | None = None


def _code(value: object) -> str:
    return value.name if isinstance(value, ErrorCodes) else str(value)


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: the h2 state machine, its streams, and the socket."""

    def __init__(self, client: H2Client, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self.h2 = _H2Connection()
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.blocked: dict[int, _Stream] = {}
        self.ready: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.max_streams = 1  # until the server's SETTINGS say otherwise
        self.usable = False  # takes new streams: from the server's SETTINGS to GOAWAY or loss
        self.closed = False
        self._flush_scheduled = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's: no subclass
        tls = transport.get_extra_info("ssl_object")
        if tls is not None and tls.selected_alpn_protocol() != "h2":
            self._fail_ready(ConnectFailed("the server did not agree to HTTP/2 (ALPN h2)"))
            transport.abort()
            return
        conn = self.h2
        conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _RECEIVE_WINDOW,
        })
        conn.initiate_connection()
        conn.increment_flow_control_window(16 * _RECEIVE_WINDOW)
        transport.write(conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.abort(ConnectionLost(f"HTTP/2 protocol error: {exc}"))
            return
        streams = self.streams
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.headers = event.headers
            elif isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.chunks.append(event.data)
            elif isinstance(event, h2.events.StreamEnded):
                self._end(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                if self.blocked:
                    self._unblock()
            elif isinstance(event, h2.events.StreamReset):
                self._fail(event.stream_id, StreamReset(
                    f"stream reset by the server: {_code(event.error_code)}", int(event.error_code)))
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._settings_changed()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._goaway(event)
                return
        self.schedule_flush()

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.usable = False
        why = f"{type(exc).__name__}: {exc}" if exc else "closed by the server"
        error = ConnectionLost(f"connection lost: {why}")
        self._fail_ready(error)
        self._fail_all(error)
        if not self.lost.done():
            self.lost.set_result(None)
        self.client._forget(self)

    # -- requests -----------------------------------------------------------------------------

    def start(self, headers: list[Header], body: bytes, future: asyncio.Future[Response],
              deadline: float) -> int:
        """Open a stream for one request; its frames leave with this turn's write."""
        conn = self.h2
        conn.in_flight = len(self.streams)
        try:
            stream_id = conn.get_next_available_stream_id()
            conn.send_headers(stream_id, headers, end_stream=not body)
        except h2.exceptions.H2Error as exc:
            self.usable = False
            self.client._forget(self)
            raise ConnectionLost(f"cannot open a stream: {type(exc).__name__}: {exc}") from exc
        stream = _Stream(future)
        self.streams[stream_id] = stream
        if body:
            window = conn.local_flow_control_window(stream_id)
            if len(body) <= window and len(body) <= conn.max_outbound_frame_size:
                conn.send_data(stream_id, body, end_stream=True)
            else:
                stream.pending = memoryview(body)
                self._push(stream_id, stream)
        stream.timer = self.loop.call_at(deadline, self._expire, stream_id)
        if stream_id >= _LAST_STREAM_ID:
            self.usable = False
            self.client._forget(self)
        self.schedule_flush()
        return stream_id

    def cancel(self, stream_id: int) -> None:
        """The caller gave up (cancelled): reset the stream and free its slot."""
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self._discard(stream_id, stream, ErrorCodes.CANCEL)

    def schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self.h2.data_to_send()
        if data and not self.closed and self.transport is not None:
            self.transport.write(data)

    def _push(self, stream_id: int, stream: _Stream) -> bool:
        """Send as much of the stream's pending body as the flow-control windows allow."""
        conn = self.h2
        data = stream.pending
        while data:
            window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if window <= 0:
                stream.pending = data
                self.blocked[stream_id] = stream
                return False
            chunk, data = data[:window], data[window:]
            conn.send_data(stream_id, chunk.tobytes(), end_stream=not data)
        stream.pending = None
        self.blocked.pop(stream_id, None)
        return True

    def _unblock(self) -> None:
        for stream_id, stream in list(self.blocked.items()):
            if not self._push(stream_id, stream) and self.h2.outbound_flow_control_window <= 0:
                break

    def _end(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        if stream.timer is not None:
            stream.timer.cancel()
        if stream.pending is not None:
            # The server answered before reading the whole body: stop sending it.
            self.blocked.pop(stream_id, None)
            self._reset(stream_id, ErrorCodes.NO_ERROR)
        headers = stream.headers
        if not stream.future.done():
            if headers is None:
                stream.future.set_exception(ConnectionLost("stream ended without a response"))
            else:
                status = 0
                for key, value in headers:
                    if key == b":status":
                        status = int(value)
                        break
                stream.future.set_result(Response(status, headers, b"".join(stream.chunks)))
        self._released()

    def _fail(self, stream_id: int, error: H2Error) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        if stream.timer is not None:
            stream.timer.cancel()
        self.blocked.pop(stream_id, None)
        if not stream.future.done():
            stream.future.set_exception(error)
        self._released()

    def _expire(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        if not stream.future.done():
            stream.future.set_exception(RequestTimeout("no complete answer before the deadline"))
        self._discard(stream_id, stream, ErrorCodes.CANCEL)

    def _discard(self, stream_id: int, stream: _Stream, code: ErrorCodes) -> None:
        if stream.timer is not None:
            stream.timer.cancel()
        self.blocked.pop(stream_id, None)
        self._reset(stream_id, code)
        self.schedule_flush()
        self._released()

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.H2Error):
            self.h2.reset_stream(stream_id, code)

    def _released(self) -> None:
        if not self.usable and not self.streams and not self.closed and self.ready.done():
            self.close()  # draining (stream ids used up) and now idle
        self.client._slot_freed()

    # -- connection-level events --------------------------------------------------------------

    def _settings_changed(self) -> None:
        limit = self.h2.remote_settings.max_concurrent_streams
        self.max_streams = max(1, min(limit, self.client.max_streams))
        if not self.ready.done():
            self.usable = True
            self.ready.set_result(None)
        self.client._slot_freed(all_waiters=True)

    def _goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.usable = False
        self.client._forget(self)
        last = event.last_stream_id or 0
        debug = bytes(event.additional_data or b"")
        code = int(event.error_code) if event.error_code is not None else 0
        what = f"GOAWAY {_code(event.error_code)}" + (
            f" {debug[:200].decode(errors='replace')}" if debug else "")
        self._fail_ready(GoAway(what, code, last, debug))
        for stream_id in list(self.streams):
            detail = "not processed" if stream_id > last else "the answer was lost"
            self._fail(stream_id, GoAway(f"{what}: {detail}", code, last, debug))
        self.close()

    def _fail_ready(self, error: H2Error) -> None:
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved here: the connect may have been given up

    def _fail_all(self, error: H2Error) -> None:
        for stream_id in list(self.streams):
            self._fail(stream_id, error)

    def close(self) -> None:
        """Say goodbye politely; streams still open fail as lost."""
        self.usable = False
        if self.closed or self.transport is None:
            return
        with contextlib.suppress(h2.exceptions.H2Error):
            self.h2.close_connection()
            self._flush()
        self.transport.close()

    def abort(self, error: H2Error) -> None:
        self.usable = False
        self._fail_ready(error)
        self._fail_all(error)
        if self.transport is not None:
            self.transport.abort()


def _retrieve(task: asyncio.Future[_Connection]) -> None:
    if not task.cancelled():
        task.exception()


def h2_ssl_context(base: ssl.SSLContext | None) -> ssl.SSLContext:
    """A client context that offers ALPN h2, trusting what `base` trusts (its CA certificates,
    or the system's; checks as strict as its own). `base` itself is left alone: it is shared
    with HTTP/1.1 clients, which must not be offered h2."""
    if base is None:
        ctx = ssl.create_default_context()
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = base.check_hostname  # before verify_mode: CERT_NONE needs it off
        ctx.verify_mode = base.verify_mode
        ctx.verify_flags = base.verify_flags
        ctx.minimum_version = base.minimum_version
        authorities = base.get_ca_certs(binary_form=True)
        if authorities:
            ctx.load_verify_locations(cadata=b"".join(authorities))
        else:
            ctx.load_default_certs()
    ctx.set_alpn_protocols(["h2"])
    return ctx


class H2Client:
    """HTTP/2 requests to one origin (`https://host[:port]`; `http://` is h2 with prior
    knowledge), multiplexed on as few connections as the server's stream limit allows."""

    def __init__(self, origin: str, *, ssl_context: ssl.SSLContext | None = None,
                 timeout: float = 15.0, connect_timeout: float | None = None,
                 max_connections: int = 4, max_streams: int = 1000) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"not an http(s) origin: {origin!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if default_port else f"{host}:{self.port}"
        self._prefix: tuple[Header, ...] = ((b":scheme", parts.scheme.encode()),
                                            (b":authority", authority.encode()))
        self._ssl = h2_ssl_context(ssl_context) if parts.scheme == "https" else None
        self.timeout = timeout
        self.connect_timeout = connect_timeout or timeout
        self.max_connections = max(1, max_connections)
        self.max_streams = max(1, max_streams)  # our own cap per connection
        self._conns: list[_Connection] = []
        self._connecting: asyncio.Future[_Connection] | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._everything: set[_Connection] = set()  # including draining ones, for close()
        self._closed = False
        self.connections_opened = 0

    @property
    def connections(self) -> int:
        """Connections taking new requests now."""
        return len(self._conns)

    async def request(self, method: bytes, path: bytes, headers: Sequence[Header] = (),
                      body: bytes = b"", *, timeout: float | None = None,  # noqa: ASYNC109
                      index_path: bool = True) -> Response:
        """Send one request and wait for its whole answer.

        `headers` are sent as given: lowercase names, bytes; an `hpack.NeverIndexedHeaderTuple`
        keeps a value that differs on every request out of the HPACK table. `index_path=False`
        does that for the path (a device token in it). The timeout runs from the call to the
        last byte of the answer, connecting included; past it the stream is reset."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        conn = self._pick()
        if conn is None:
            conn = await self._acquire(deadline)
        future: asyncio.Future[Response] = loop.create_future()
        path_header = (b":path", path) if index_path else NeverIndexedHeaderTuple(b":path", path)
        stream_id = conn.start([(b":method", method), *self._prefix, path_header, *headers],
                               body, future, deadline)
        try:
            return await future
        except asyncio.CancelledError:
            conn.cancel(stream_id)
            raise

    def _pick(self) -> _Connection | None:
        for conn in self._conns:
            if conn.usable and len(conn.streams) < conn.max_streams:
                return conn
        return None

    async def _acquire(self, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise ConnectionLost("the client is closed")
            conn = self._pick()
            if conn is not None:
                return conn
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RequestTimeout("no connection or stream became free before the deadline")
            if self._connecting is None and len(self._conns) < self.max_connections:
                self._connecting = loop.create_task(self._open())
                # Whoever waits on it sees its error; if all gave up, it is retrieved here.
                self._connecting.add_done_callback(_retrieve)
            waiter: asyncio.Future[Any]
            if self._connecting is not None:
                waiter = asyncio.shield(self._connecting)
            else:
                slot: asyncio.Future[None] = loop.create_future()
                self._waiters.append(slot)
                waiter = slot
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                raise RequestTimeout("no connection or stream became free before the deadline"
                                     ) from None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(self, loop)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(
                    lambda: conn, self.host, self.port, ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None)
                await conn.ready
        except (H2Error, OSError, TimeoutError) as exc:
            conn.abort(ConnectFailed("connect failed"))
            if isinstance(exc, ConnectFailed):
                raise
            detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {detail}") from exc
        finally:
            self._connecting = None
        if self._closed:
            conn.close()
            raise ConnectionLost("the client is closed")
        if not conn.usable:
            raise ConnectFailed(f"the connection to {self.host}:{self.port} ended at once")
        self._conns.append(conn)
        self._everything.add(conn)
        self.connections_opened += 1
        return conn

    def _forget(self, conn: _Connection) -> None:
        """The connection takes no new streams (GOAWAY, lost, draining)."""
        if conn in self._conns:
            self._conns.remove(conn)
            self._slot_freed(all_waiters=True)  # they may open its replacement
        if conn.closed:
            self._everything.discard(conn)

    def _slot_freed(self, all_waiters: bool = False) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not all_waiters:
                    return

    async def close(self) -> None:
        self._closed = True
        conns = list(self._everything | set(self._conns))
        self._conns.clear()
        self._everything.clear()
        for conn in conns:
            conn.close()
        self._slot_freed(all_waiters=True)
        pending = [conn.lost for conn in conns if not conn.lost.done()]
        if pending:
            await asyncio.wait(pending, timeout=1.0)


__all__ = ["ConnectFailed", "ConnectionLost", "GoAway", "H2Client", "H2Error", "Header",
           "HeaderTuple", "NeverIndexedHeaderTuple", "RequestTimeout", "Response", "StreamReset",
           "h2_ssl_context"]
