"""The HTTP/2 client against a loopback HTTP/2 server over TLS: multiplexing on one connection,
flow control, the server's stream limit, GOAWAY, stream resets, lost connections, timeouts."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator

import pytest
from h2.errors import ErrorCodes

from tests.fakes.apns_double import Answer, H2Server, Request
from tests.fakes.tls import loopback_tls
from tidings.adapters.providers.h2client import (
    ConnectFailed,
    ConnectionLost,
    GoAway,
    H2Client,
    H2Error,
    RequestTimeout,
    StreamReset,
    h2_ssl_context,
)


def echo(request: Request) -> Answer:
    delay = float(request.header("x-delay") or 0)
    return Answer(200, [("x-path", request.path), ("x-length", str(len(request.body)))],
                  request.body, delay=delay)


@pytest.fixture
async def server() -> AsyncIterator[H2Server]:
    async with H2Server(echo) as s:
        yield s


def client_for(server: H2Server, **kwargs: object) -> H2Client:
    kwargs.setdefault("timeout", 5.0)
    return H2Client(server.url, ssl_context=loopback_tls().client_context(), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def client(server: H2Server) -> AsyncIterator[H2Client]:
    c = client_for(server)
    yield c
    await c.close()


async def post(client: H2Client, path: str, body: bytes = b"", delay: float = 0.0,
               **kwargs: object) -> tuple[int, dict[bytes, bytes], bytes]:
    headers = [(b"x-delay", str(delay).encode())] if delay else []
    r = await client.request(b"POST", path.encode(), headers, body, **kwargs)  # type: ignore[arg-type]
    return r.status, dict(r.headers), r.body


async def test_many_concurrent_streams_share_one_connection(server, client):
    answers = await asyncio.gather(*(post(client, f"/n/{i}", f"body {i}".encode(), delay=0.05)
                                     for i in range(500)))
    for i, (status, headers, body) in enumerate(answers):
        assert status == 200 and headers[b"x-path"] == f"/n/{i}".encode()
        assert body == f"body {i}".encode()
    assert server.connections == 1 and client.connections_opened == 1
    assert server.max_open >= 250  # really multiplexed, not one after the other
    assert server.protocol_errors == []


async def test_bodies_larger_than_the_windows_follow_flow_control(server, client):
    big = [bytes([i]) * (1_000_000 + i) for i in range(3)]  # the server's windows are 64 KiB
    answers = await asyncio.gather(*(post(client, "/big", body) for body in big))
    for body, (status, headers, echoed) in zip(big, answers, strict=True):
        assert status == 200 and headers[b"x-length"] == str(len(body)).encode()
        assert echoed == body
    assert server.connections == 1 and server.protocol_errors == []


async def test_the_servers_stream_limit_is_respected_then_another_connection_opens():
    async with H2Server(echo, max_concurrent_streams=10) as server:
        one = client_for(server, max_connections=1)
        started = time.monotonic()
        answers = await asyncio.gather(*(post(one, f"/{i}", delay=0.1) for i in range(30)))
        assert [a[0] for a in answers] == [200] * 30
        assert time.monotonic() - started >= 0.3  # three rounds of ten on one connection
        assert server.connections == 1 and server.max_open == 10
        await one.close()

        three = client_for(server, max_connections=3)
        answers = await asyncio.gather(*(post(three, f"/{i}", delay=0.1) for i in range(30)))
        assert [a[0] for a in answers] == [200] * 30
        assert three.connections_opened == 3 and server.max_open == 10
        assert server.protocol_errors == []  # never more streams than the server allowed
        await three.close()


async def test_goaway_fails_the_unprocessed_streams_as_retryable_and_the_next_request_reconnects(
        server, client):
    await post(client, "/warm-up")
    server.answered = 0
    server.goaway_after = 3
    results = await asyncio.gather(*(post(client, f"/{i}") for i in range(10)),
                                   return_exceptions=True)
    ok = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, GoAway)]
    assert len(ok) == 3 and len(refused) == 7, results
    last = refused[0].last_stream_id
    assert all("not processed" in str(e) and e.last_stream_id == last for e in refused)
    assert all(isinstance(e, H2Error) for e in refused)

    server.goaway_after = None
    assert (await post(client, "/after"))[0] == 200
    assert client.connections_opened == 2 and server.connections == 2


async def test_a_dropped_connection_fails_pending_streams_and_the_next_request_reconnects(
        server, client):
    def handler(request: Request) -> Answer:
        return Answer(drop=True) if request.path == "/drop" else echo(request)

    server.handler = handler
    pending = [asyncio.ensure_future(post(client, f"/slow/{i}", delay=5)) for i in range(5)]
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectionLost):
        await post(client, "/drop")
    for task in pending:
        with pytest.raises(ConnectionLost):
            await task
    assert (await post(client, "/again"))[0] == 200
    assert client.connections_opened == 2

    # Dropped while idle: the loss is noticed and the next request opens a new connection.
    server.drop_connections()
    await asyncio.sleep(0.05)
    assert client.connections == 0
    assert (await post(client, "/third"))[0] == 200
    assert client.connections_opened == 3


async def test_a_reset_stream_fails_alone(server, client):
    def handler(request: Request) -> Answer:
        if request.path == "/reset":
            return Answer(reset=ErrorCodes.REFUSED_STREAM)
        return echo(request)

    server.handler = handler
    with pytest.raises(StreamReset) as caught:
        await post(client, "/reset")
    assert caught.value.error_code == ErrorCodes.REFUSED_STREAM
    assert (await post(client, "/fine"))[0] == 200
    assert client.connections_opened == 1


async def test_timeout_cancels_the_stream_and_keeps_the_connection(server, client):
    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        await post(client, "/slow", delay=2, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 1.5
    assert isinstance(RequestTimeout("x"), TimeoutError)
    assert (await post(client, "/fast"))[0] == 200
    assert client.connections_opened == 1
    assert server.resets_received == 1  # the server was told to stop working on it


async def test_a_cancelled_request_resets_its_stream(server, client):
    task = asyncio.ensure_future(post(client, "/slow", delay=2))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await post(client, "/next")
    assert server.resets_received == 1


async def test_a_server_without_h2_is_refused():
    async with H2Server(echo, ssl_context=loopback_tls().server_context(alpn=("http/1.1",))) as s:
        c = client_for(s)
        with pytest.raises(ConnectFailed, match="ALPN"):
            await post(c, "/")
        await c.close()


async def test_an_untrusted_certificate_is_refused(server):
    c = H2Client(server.url, ssl_context=None, timeout=2.0)  # the system's trust: not our CA
    with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
        await c.request(b"GET", b"/")
    await c.close()


async def test_nothing_listening_is_a_connect_failure():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = H2Client(f"https://127.0.0.1:{port}", ssl_context=loopback_tls().client_context(),
                 timeout=2.0)
    with pytest.raises(ConnectFailed):
        await c.request(b"GET", b"/")
    await c.close()


async def test_close_fails_what_is_in_flight(server):
    c = client_for(server)
    task = asyncio.ensure_future(post(c, "/slow", delay=5))
    await asyncio.sleep(0.05)
    await c.close()
    with pytest.raises(ConnectionLost):
        await task
    with pytest.raises(ConnectionLost):
        await post(c, "/after-close")


def test_the_h2_context_keeps_the_trust_and_checks_of_the_shared_one():
    shared = loopback_tls().client_context()
    ctx = h2_ssl_context(shared)
    assert ctx is not shared  # the shared context, used by HTTP/1.1 clients, gets no ALPN h2
    assert ctx.get_ca_certs() == shared.get_ca_certs() and ctx.check_hostname
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    shared.check_hostname, shared.verify_mode = False, ssl.CERT_NONE
    relaxed = h2_ssl_context(shared)
    assert (relaxed.check_hostname, relaxed.verify_mode) == (False, ssl.CERT_NONE)


async def test_the_shared_context_still_talks_http1(server):
    """Building the h2 client left the shared context without ALPN: the server, which speaks
    h2 only, agrees to no protocol over it."""
    shared = loopback_tls().client_context()
    client = H2Client(server.url, ssl_context=shared)
    await client.request(b"GET", b"/")
    await client.close()
    _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=shared,
                                              server_hostname="127.0.0.1")
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
    writer.transport.abort()
