"""A loopback double of the Apple Push Notification service, over real HTTP/2 and TLS.

`H2Server` is a small HTTP/2 server (asyncio + `h2`) on 127.0.0.1, port 0, answering each
request through a handler; it can also misbehave on demand (answer slowly, reset a stream, send
GOAWAY, drop the connection) and counts connections and concurrent streams.

`ApnsDouble` puts APNs's provider API on it: `POST /3/device/<hex token>`, the ES256 provider
token checked against the PUBLIC half of the .p8 key (header `kid`, claims `iss` and a recent
`iat`), the `apns-*` headers and the 4 KB payload limit, with APNs's statuses and
`{"reason": ...}` bodies. What it answers can be scripted per device token.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fakes.tls import loopback_tls

# -- a generic HTTP/2 server ----------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    stream_id: int
    connection: int  # 1 for the first connection accepted, 2 for the next, ...

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass
class Answer:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    delay: float = 0.0  # seconds before answering
    reset: int | None = None  # RST_STREAM with this error code instead of an answer
    goaway: bool = False  # GOAWAY (last stream id below this one) and close, instead of an answer
    drop: bool = False  # cut the TCP connection at once, answering nothing


Handler = Callable[[Request], Answer]


class _H2ServerConnection(h2.connection.H2Connection):
    """h2 counts the open streams by walking all of them for every new one; the count only
    matters near the limit, so below it the number of streams it holds (never fewer than the
    open ones) is enough."""

    @property
    def open_inbound_streams(self) -> int:
        held = len(self.streams)
        if held >= self.local_settings.max_concurrent_streams:
            return self._open_streams(1 - int(self.config.client_side))
        return held


class _ServerConnection(asyncio.Protocol):
    def __init__(self, server: H2Server, number: int) -> None:
        self.server = server
        self.number = number
        self.h2 = _H2ServerConnection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        self._flush_scheduled = False
        self.transport: asyncio.Transport | None = None
        self.requests: dict[int, tuple[list[tuple[str, str]], list[bytes]]] = {}
        self.outgoing: dict[int, memoryview] = {}  # response bodies waiting for window
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server._open.add(self)
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.server.max_concurrent_streams})
        self.h2.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server._open.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.server.protocol_errors.append(f"{type(exc).__name__}: {exc}")
            self.flush()
            if self.transport:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.requests[event.stream_id] = (list(event.headers), [])
                self.server.max_open = max(self.server.max_open, len(self.requests))
            elif isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if event.stream_id in self.requests:
                    self.requests[event.stream_id][1].append(event.data)
            elif isinstance(event, h2.events.StreamEnded):
                self.dispatch(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.requests.pop(event.stream_id, None)
                self.outgoing.pop(event.stream_id, None)
                self.server.resets_received += 1
            elif isinstance(event, h2.events.WindowUpdated):
                for stream_id in list(self.outgoing):
                    self.push(stream_id)
            if self.closed:
                return
        self.flush()

    def dispatch(self, stream_id: int) -> None:
        headers, chunks = self.requests[stream_id]
        pseudo = dict(h for h in headers if h[0].startswith(":"))
        request = Request(pseudo.get(":method", ""), pseudo.get(":path", ""),
                          [h for h in headers if not h[0].startswith(":")], b"".join(chunks),
                          stream_id, self.number)
        self.server.requests += 1
        answer = self.server.handler(request)
        if answer.drop:
            self.closed = True
            if self.transport:
                self.transport.abort()
        elif answer.goaway:
            self.goaway(stream_id - 2)
        elif answer.delay:
            asyncio.get_running_loop().call_later(answer.delay, self.respond, stream_id, answer)
        else:
            self.respond(stream_id, answer)

    def respond(self, stream_id: int, answer: Answer) -> None:
        if self.closed or stream_id not in self.requests:
            return  # the connection is gone, or the client reset the stream
        del self.requests[stream_id]
        if answer.reset is not None:
            self.h2.reset_stream(stream_id, answer.reset)
        else:
            headers = [(":status", str(answer.status)), *answer.headers]
            self.h2.send_headers(stream_id, headers, end_stream=not answer.body)
            if answer.body:
                self.outgoing[stream_id] = memoryview(answer.body)
                self.push(stream_id)
        self.server.answered += 1
        after = self.server.goaway_after
        if after is not None and self.server.answered >= after:
            self.goaway(stream_id)
            return
        if not self._flush_scheduled:  # the answers of one event-loop turn leave together
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def push(self, stream_id: int) -> None:
        data = self.outgoing[stream_id]
        while data:
            window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            if window <= 0:
                self.outgoing[stream_id] = data
                return
            chunk, data = data[:window], data[window:]
            self.h2.send_data(stream_id, chunk.tobytes(), end_stream=not data)
        del self.outgoing[stream_id]

    def goaway(self, last_stream_id: int) -> None:
        self.server.goaways_sent += 1
        self.h2.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR,
                                 last_stream_id=max(last_stream_id, 0),
                                 additional_data=b'{"reason":"Shutdown"}')
        self.flush()
        self.closed = True
        if self.transport:
            self.transport.close()

    def flush(self) -> None:
        self._flush_scheduled = False
        data = self.h2.data_to_send()
        if data and self.transport and not self.transport.is_closing():
            self.transport.write(data)


class H2Server:
    """An HTTP/2 server over TLS on 127.0.0.1 answering through `handler`."""

    def __init__(self, handler: Handler, *, ssl_context: ssl.SSLContext | None = None,
                 max_concurrent_streams: int = 1000) -> None:
        self.handler = handler
        self.ssl_context = ssl_context or loopback_tls().server_context()
        self.max_concurrent_streams = max_concurrent_streams
        self.goaway_after: int | None = None  # GOAWAY once this many answers were given
        self.connections = 0
        self.requests = 0
        self.answered = 0
        self.max_open = 0  # the most requests open at once on one connection
        self.resets_received = 0
        self.goaways_sent = 0
        self.protocol_errors: list[str] = []
        self._open: set[_ServerConnection] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _accept(self) -> _ServerConnection:
        self.connections += 1
        return _ServerConnection(self, self.connections)

    async def start(self) -> H2Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def drop_connections(self) -> None:
        for conn in list(self._open):
            conn.closed = True
            if conn.transport:
                conn.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop_connections()
            await self._server.wait_closed()

    async def __aenter__(self) -> H2Server:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- APNs -----------------------------------------------------------------------------------------

PUSH_TYPES = frozenset({"alert", "background", "location", "voip", "complication", "fileprovider",
                        "mdm", "liveactivity", "pushtotalk"})
_PATH = re.compile(r"/3/device/([^/?]*)")
_HEX = re.compile(r"[0-9a-fA-F]{64,200}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def make_signing_key() -> tuple[str, str]:
    """A fresh APNs-style signing key: the .p8 (PKCS#8 PEM, P-256) and its public half."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@dataclass
class Reply:
    """What the double answers for one device token instead of success."""

    status: int
    reason: str | None = None
    retry_after: str | None = None
    delay: float = 0.0
    body: bytes | None = None  # raw body instead of {"reason": ...}: garbage, truncated JSON
    reset: int | None = None
    goaway: bool = False
    drop: bool = False


@dataclass
class Push:
    """A request the double received, and the status it answered."""

    token: str
    headers: dict[str, str]
    payload: Any
    provider_token: str | None
    status: int
    reason: str | None
    apns_id: str | None


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status, self.reason = status, reason


class ApnsDouble:
    def __init__(self, *, team_id: str, key_id: str, public_key: str, topic: str,
                 max_concurrent_streams: int = 1000, delay: float = 0.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.team_id, self.key_id, self.topic = team_id, key_id, topic
        self.public_key = serialization.load_pem_public_key(public_key.encode())
        self.server = H2Server(self._handle, ssl_context=ssl_context,
                               max_concurrent_streams=max_concurrent_streams)
        self.script: dict[str, Reply] = {}  # device token -> what to answer
        self.delay = delay  # seconds before every answer
        self.received: list[Push] = []
        self.tokens_seen: list[str] = []  # distinct provider tokens, in the order first seen
        self.expired: set[str] = set()  # provider tokens to refuse as ExpiredProviderToken
        self.clock: Callable[[], float] = time.time
        self._verified: dict[str, int] = {}  # provider token -> its iat, once verified

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def connections(self) -> int:
        return self.server.connections

    def expire_tokens(self) -> None:
        """Every provider token seen so far is refused from now on, as one past its hour."""
        self.expired.update(self.tokens_seen)

    def ok(self) -> list[Push]:
        return [p for p in self.received if p.status == 200]

    async def __aenter__(self) -> ApnsDouble:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()

    # -- one request ------------------------------------------------------------------------------

    def _handle(self, request: Request) -> Answer:
        token = ""
        provider_token = None
        apns_id = request.header("apns-id")
        try:
            token = self._check_target(request)
            provider_token = self._check_provider_token(request.header("authorization"))
            payload = self._check_message(request)
        except _Refused as refused:
            self._record(request, token, None, provider_token, refused.status, refused.reason)
            return self._error(refused.status, refused.reason)
        reply = self.script.get(token)
        if reply is not None and (reply.status != 200 or reply.body is not None or reply.drop
                                  or reply.reset is not None or reply.goaway):
            self._record(request, token, payload, provider_token, reply.status, reply.reason)
            headers = [("retry-after", reply.retry_after)] if reply.retry_after else []
            if reply.body is not None:
                body = reply.body
            else:
                doc: dict[str, Any] = {"reason": reply.reason}
                if reply.status == 410:
                    doc["timestamp"] = int(self.clock() * 1000)
                body = json.dumps(doc).encode()
            return Answer(reply.status, [*headers, ("content-type", "application/json")], body,
                          delay=reply.delay or self.delay, reset=reply.reset, goaway=reply.goaway,
                          drop=reply.drop)
        apns_id = apns_id or str(uuid.uuid4()).upper()
        self._record(request, token, payload, provider_token, 200, None, apns_id)
        return Answer(200, [("apns-id", apns_id)], delay=(reply.delay if reply else 0) or self.delay)

    def _record(self, request: Request, token: str, payload: Any, provider_token: str | None,
                status: int, reason: str | None, apns_id: str | None = None) -> None:
        self.received.append(Push(token, dict(request.headers), payload, provider_token, status,
                                  reason, apns_id))

    @staticmethod
    def _error(status: int, reason: str) -> Answer:
        return Answer(status, [("content-type", "application/json")],
                      json.dumps({"reason": reason}).encode())

    def _check_target(self, request: Request) -> str:
        if request.method != "POST":
            raise _Refused(405, "MethodNotAllowed")
        match = _PATH.fullmatch(request.path)
        if match is None:
            raise _Refused(404, "BadPath")
        token = match.group(1)
        if not token:
            raise _Refused(400, "MissingDeviceToken")
        if not _HEX.fullmatch(token) or len(token) % 2:
            raise _Refused(400, "BadDeviceToken")
        return token

    def _check_provider_token(self, authorization: str | None) -> str:
        if not authorization:
            raise _Refused(403, "MissingProviderToken")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _Refused(403, "InvalidProviderToken")
        if token not in self.tokens_seen:
            self.tokens_seen.append(token)
        iat = self._verified.get(token)
        if iat is None:
            iat = self._verify(token)
            self._verified[token] = iat
        now = self.clock()
        if token in self.expired or now - iat > 3600:
            raise _Refused(403, "ExpiredProviderToken")
        if iat > now + 300:
            raise _Refused(403, "InvalidProviderToken")
        return token

    def _verify(self, token: str) -> int:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
                raise _Refused(403, "InvalidProviderToken")
            claims = jwt.decode(token, self.public_key, algorithms=["ES256"],  # type: ignore[arg-type]
                                options={"require": ["iss", "iat"], "verify_iat": False})
        except jwt.PyJWTError:
            raise _Refused(403, "InvalidProviderToken") from None
        if claims["iss"] != self.team_id or not isinstance(claims["iat"], int):
            raise _Refused(403, "InvalidProviderToken")
        return int(claims["iat"])

    def _check_message(self, request: Request) -> Any:
        names = [name for name, _ in request.headers]
        if len(names) != len(set(names)):
            raise _Refused(400, "DuplicateHeaders")
        h = dict(request.headers)
        topic = h.get("apns-topic")
        if not topic:
            raise _Refused(400, "MissingTopic")
        if topic != self.topic:
            raise _Refused(400, "TopicDisallowed")
        push_type = h.get("apns-push-type")
        if push_type not in PUSH_TYPES:
            raise _Refused(400, "InvalidPushType")
        priority = h.get("apns-priority", "10")
        if priority not in ("1", "5", "10") or (push_type == "background" and priority != "5"):
            raise _Refused(400, "BadPriority")
        if "apns-expiration" in h and not h["apns-expiration"].isdigit():
            raise _Refused(400, "BadExpirationDate")
        if "apns-id" in h and not _UUID.fullmatch(h["apns-id"]):
            raise _Refused(400, "BadMessageId")
        if len(h.get("apns-collapse-id", "").encode()) > 64:
            raise _Refused(400, "BadCollapseId")
        limit = 5120 if push_type == "voip" else 4096
        if len(request.body) > limit:
            raise _Refused(413, "PayloadTooLarge")
        if not request.body:
            raise _Refused(400, "PayloadEmpty")
        try:
            payload = json.loads(request.body)
        except ValueError:
            # Not one of APNs's documented reasons: what it says to malformed JSON is not public.
            raise _Refused(400, "BadPayload") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            raise _Refused(400, "BadPayload")
        return payload
