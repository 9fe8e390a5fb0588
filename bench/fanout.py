"""Push fan-out: requests per second of Tidings' FCM and APNs providers against the fastest
plain Python client for the same protocol, against pyfcm and firebase-admin, and deliveries per
second end to end through the engine, all to loopback doubles, in one run.

    .venv/bin/python bench/fanout.py [--n 10000] [--concurrency 100] [--rounds 5]
        [--only fcm,apns,engine,libs] [--postgres] [--double auto|nginx|python]

Parts (each skipped with a message when what it needs is missing):

- fcm: an FCM v1 double over HTTP/1.1 keep-alive (nginx, else a Python asyncio server);
  (a) bare loop: aiohttp ClientSession + TCPConnector(limit=C), C lanes, one orjson body per
  message, the same JSON that Tidings sends; (b) Tidings' FcmProvider.send() of all n messages
  with ProviderOptions(max_concurrency=C).
- apns: an APNs double over HTTP/2 + TLS (nginx http2, else a Python h2 server); (a) raw `h2`
  client: one TLS connection, C concurrent streams, driven from the protocol's callbacks;
  (b) Tidings' ApnsProvider.send() with ProviderOptions(max_concurrency=C, ssl_context=<our CA>).
- engine: `tidings.bootstrap.build` on a fresh SQLite file (and PostgreSQL with --postgres), the
  app configured through the HTTP API in process, devices written in bulk through the store,
  then POST /v1/notifications and `dispatcher.run_once()` until nothing is due: (i) one user with
  n Android devices, (ii) n users with one device each (n/1000 POSTs of 1000 user ids).
- libs: pyfcm (`notify` from C threads; `async_notify_multiple_devices` in chunks of C) and
  firebase-admin (`send_each` in chunks of C threads; `send_each_async` in chunks of 500, its
  maximum), pointed at the same double.

This process pins itself to core 1, the doubles to core 0 (taskset). Each client of a part is
warmed up, then the part runs --rounds rounds of n requests for each client, interleaved (round r
starts with the r-th client), so that other load on the machine falls on all alike; medians are
quoted. Also printed: the client's CPU per request, how busy the double was (near 100 % it would
be the limit, not the client), the RSS after each round (and RssAnon, which leaves out SQLite's
mmap of the database), and ru_maxrss / VmRSS / RssAnon before and after each part. Nothing
asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import importlib.util
import logging
import math
import os
import resource
import secrets
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _fanout_doubles as doubles
import orjson
from _common import ADMIN_KEY, SECRET_KEY, check_quiet, console, median, ratio, verdict
from rich.markup import escape
from rich.table import Table

CLIENT_CORE, DOUBLE_CORE = 1, 0
PROVIDER_TARGET = 0.7
PARTS = ("fcm", "apns", "engine", "libs")
TITLE = "Your order has shipped"
APNS_TOPIC = "com.example.app"


# --- bookkeeping ---------------------------------------------------------------------------

@dataclass
class Measure:
    part: str
    name: str
    n: int
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # client process CPU per request
    double_busy: list[float] = field(default_factory=list)  # share of the double's core
    errors: int = 0
    note: str = ""
    rss_first: float = math.nan  # current RSS after the first round, MiB
    rss_end: float = math.nan  # current RSS after the last round, MiB

    @property
    def rate(self) -> float:
        return median(self.rates)

    @property
    def cpu_rate(self) -> float:
        """Requests per second of this process's CPU: what the client costs, whatever else
        shares its core."""
        return 1e6 / median(self.cpu_us) if self.cpu_us else math.nan


@dataclass
class Report:
    measures: dict[str, Measure] = field(default_factory=dict)
    rss: list[tuple[str, float, float, float, float, float, float]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def skip(self, what: str, why: str) -> None:
        self.skipped.append(f"{what}: {why}")
        console.print(f"[yellow]skipped[/] {what}: {why}")


def rss_mb() -> tuple[float, float, float]:
    """(peak RSS so far, current RSS, current anonymous RSS) of this process, in MiB. The
    anonymous part leaves out mapped files (SQLite's mmap of the database counts as RSS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    current = anon = math.nan
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak, current, anon


@dataclass
class Contestant:
    """One client in a part: `run` sends the n requests of one round and returns how many
    succeeded; `warmup` (not timed) builds pools, tokens and caches first."""

    key: str
    name: str
    run: Callable[[], Awaitable[int]]
    warmup: Callable[[], Awaitable[Any]] | None = None
    note: str = ""


async def timed_round(m: Measure, r: int, run: Callable[[], Awaitable[int]],
                      double: doubles.Double | None) -> None:
    gc.collect()
    served_before = doubles.served(double) if double is not None else None
    cpu0, d0 = time.process_time(), double.cpu() if double else 0.0
    started = time.perf_counter()
    ok = await run()
    took = time.perf_counter() - started
    cpu1, d1 = time.process_time(), double.cpu() if double else 0.0
    n = m.n
    m.rates.append(n / took)
    m.cpu_us.append((cpu1 - cpu0) / n * 1e6)
    m.double_busy.append((d1 - d0) / took if double else math.nan)
    m.errors += n - ok
    served = ""
    if served_before is not None and double is not None:
        # minus the status request that read `served_before`
        count = (doubles.served(double) or 0) - served_before - 1
        served = f", double saw {count:,}"
    gc.collect()
    _, m.rss_end, anon = rss_mb()
    if r == 0:
        m.rss_first = m.rss_end
    console.print(f"  {m.name} round {r + 1}: {n / took:,.0f} req/s ({took:.2f} s), "
                  f"CPU {m.cpu_us[-1]:.0f} µs/req, double busy {m.double_busy[-1]:.0%}, "
                  f"ok {ok:,}/{n:,}{served}, RSS {m.rss_end:.0f} MiB (anon {anon:.0f})")


async def contest(report: Report, part: str, n: int, rounds: int, double: doubles.Double | None,
                  contestants: Sequence[Contestant]) -> list[Measure]:
    """Warm every contestant up, then run their rounds interleaved (round r starts with the
    r-th contestant), so that load from elsewhere on the machine falls on all of them alike."""
    measures = []
    for c in contestants:
        m = report.measures[c.key] = Measure(part, c.name, n, note=c.note)
        measures.append(m)
        if c.warmup is not None:
            await c.warmup()
    for r in range(rounds):
        k = len(contestants)
        for i in range(k):
            j = (r + i) % k
            await timed_round(measures[j], r, contestants[j].run, double)
    return measures


async def measure(report: Report, key: str, part: str, name: str, n: int, rounds: int,
                  one_round: Callable[[], Awaitable[int]], double: doubles.Double | None,
                  warmup: Callable[[], Awaitable[Any]] | None = None, note: str = "") -> Measure:
    """One contestant alone."""
    return (await contest(report, part, n, rounds, double,
                          [Contestant(key, name, one_round, warmup, note)]))[0]


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# --- inputs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Push:
    token: str
    title: str
    body: str
    data: dict[str, str]


def fcm_token(i: int) -> str:
    # Real FCM registration tokens are ~160 characters: an instance id, a colon, a long secret.
    return f"f{i:09d}:APA91b" + hashlib.sha256(str(i).encode()).hexdigest() * 2 + "x" * 20


def apns_token(i: int) -> str:
    return hashlib.sha256(f"apns-{i}".encode()).hexdigest()  # 64 hex characters


def pushes(n: int, token: Callable[[int], str]) -> list[Push]:
    return [Push(token(i), TITLE, f"Order {i} arrives on Tuesday", {"order": str(i), "kind": "shipping"})
            for i in range(n)]


def outbound(items: Sequence[Push], provider: str, platform: str) -> list[Any]:
    from tidings.domain.delivery import OutboundMessage

    return [OutboundMessage(delivery_id=f"d{i:08d}", notification_id=f"n{i:08d}", app_id="bench",
                            user_id=f"user-{i}", channel="push", provider=provider, target=p.token,
                            platform=platform, title=p.title, body=p.body, data=dict(p.data),
                            priority="normal", device_id=f"dev{i}")
            for i, p in enumerate(items)]


def fcm_body(p: Push) -> bytes:
    """The v1 request Tidings' FcmProvider sends for such a message (normal priority, no TTL)."""
    return orjson.dumps({"message": {
        "token": p.token, "notification": {"title": p.title, "body": p.body}, "data": p.data,
        "android": {"priority": "normal"}, "apns": {"headers": {"apns-priority": "5"}},
        "webpush": {"headers": {"Urgency": "normal"}}}})


# --- FCM -----------------------------------------------------------------------------------

def import_or_none(module: str) -> str | None:
    """None when the module can be imported, else why not."""
    try:
        if importlib.util.find_spec(module.split(":")[0]) is None:
            return f"{module} is not installed"
        __import__(module)
    except Exception as exc:  # noqa: BLE001 -- any failure means: skip the part
        return f"{module} cannot be imported ({type(exc).__name__}: {exc})"
    return None


async def fetch_token(base: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.post(f"{base}/token", data={"grant_type": "x"}) as r:
        return str(orjson.loads(await r.read())["access_token"])


def tidings_results(results: Sequence[Any]) -> int:
    """How many results are Sent; the first other one is printed."""
    from tidings.domain.delivery import Sent

    bad = [r for r in results if not isinstance(r, Sent)]
    if bad:
        console.print(f"  [red]{len(bad)} not sent[/], first: {escape(repr(bad[0]))}")
    return len(results) - len(bad)


async def tidings_fcm(report: Report, args: argparse.Namespace, base: str, items: Sequence[Push],
                      stack: AsyncExitStack, key: str) -> Contestant | None:
    why = import_or_none("tidings.adapters.providers.fcm")
    if why:
        report.skip("Tidings FcmProvider", why)
        return None
    from tidings.adapters.providers.fcm import FcmProvider
    from tidings.adapters.providers.options import ProviderOptions

    c = args.concurrency
    sa = doubles.service_account(f"{base}/token")
    provider = FcmProvider({"credentials": sa, "endpoint": base}, ProviderOptions(max_concurrency=c))
    stack.push_async_callback(provider.close)
    messages = outbound(items, "fcm", "android")

    async def run(batch: Sequence[Any]) -> int:
        return tidings_results(await provider.send(batch))

    return Contestant(key, "Tidings Fcm", lambda: run(messages),
                      lambda: run(messages[:min(len(messages), 2000)]),
                      f"one send() of {len(messages):,} messages, max_concurrency={c}")


async def part_fcm(report: Report, args: argparse.Namespace, double: doubles.Double) -> None:
    import aiohttp

    n, c, base = args.n, args.concurrency, double.base_url
    items = pushes(n, fcm_token)
    url = f"{base}/v1/projects/{doubles.PROJECT}/messages:send"
    access = await fetch_token(base)
    headers = {"Authorization": f"Bearer {access}",
               "Content-Type": "application/json; charset=UTF-8"}
    console.print(f"[bold]FCM[/], {n:,} requests per round, C = {c}: {double.describe()}")
    async with AsyncExitStack() as stack:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c),
                                        cookie_jar=aiohttp.DummyCookieJar())
        stack.push_async_callback(session.close)

        async def bare(batch: Sequence[Push]) -> int:
            ok = 0
            queue = iter(batch)

            async def lane() -> None:
                nonlocal ok
                for p in queue:
                    async with session.post(url, data=fcm_body(p), headers=headers) as resp:
                        raw = await resp.read()
                        if resp.status == 200 and orjson.loads(raw)["name"]:
                            ok += 1

            await asyncio.gather(*(lane() for _ in range(min(c, len(batch)))))
            return ok

        contestants = [Contestant("fcm_bare", "bare aiohttp", lambda: bare(items),
                                  lambda: bare(items[:min(n, 2000)]),
                                  f"aiohttp {aiohttp.__version__}, TCPConnector(limit={c}), {c} lanes")]
        mine = await tidings_fcm(report, args, base, items, stack, "fcm_tidings")
        if mine is not None:
            contestants.append(mine)
        await contest(report, "fcm", n, args.rounds, double, contestants)


# --- libraries: pyfcm, firebase-admin --------------------------------------------------------

def pyfcm_contestants(report: Report, args: argparse.Namespace, base: str,
                      items: Sequence[Push], stack: AsyncExitStack) -> list[Contestant]:
    why = import_or_none("pyfcm")
    if why:
        report.skip("pyfcm", why + " (.venv/bin/pip install pyfcm)")
        return []
    from google.oauth2 import service_account
    from pyfcm import FCMNotification

    n, c = len(items), args.concurrency
    loop = asyncio.get_running_loop()
    sa = doubles.service_account(f"{base}/token")
    creds = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        sa, scopes=["https://www.googleapis.com/auth/firebase.messaging"])
    fcm = FCMNotification(credentials=creds, project_id=doubles.PROJECT)
    fcm.FCM_END_POINT_BASE = f"{base}/v1/projects"  # the documented default's attribute
    pool = ThreadPoolExecutor(max_workers=c, thread_name_prefix="pyfcm")
    stack.callback(pool.shutdown, wait=True)

    def params(p: Push) -> dict[str, Any]:
        return {"fcm_token": p.token, "notification_title": p.title,
                "notification_body": p.body, "data_payload": p.data,
                "android_config": {"priority": "normal"},
                "apns_config": {"headers": {"apns-priority": "5"}},
                "webpush_config": {"headers": {"Urgency": "normal"}}}

    def notify(p: Push) -> bool:
        return bool(fcm.notify(**params(p), timeout=15).get("name"))

    async def threads(batch: Sequence[Push]) -> int:
        return sum(await asyncio.gather(*(loop.run_in_executor(pool, notify, p) for p in batch)))

    def async_chunks(batch: Sequence[Push]) -> int:
        ok = 0
        for part in chunks(batch, c):
            answers = fcm.async_notify_multiple_devices([params(p) for p in part], timeout=15)
            ok += sum(1 for a in answers if isinstance(a, dict) and a.get("name"))
        return ok

    async def in_thread(batch: Sequence[Push]) -> int:
        return await loop.run_in_executor(None, async_chunks, batch)

    return [
        Contestant("pyfcm_threads", "pyfcm notify x threads", lambda: threads(items),
                   lambda: threads(items[:min(n, 4 * c)]),
                   f"FCMNotification.notify() from a pool of {c} threads (requests, a keep-alive "
                   "session per thread)"),
        Contestant("pyfcm_async", "pyfcm async_notify…", lambda: in_thread(items),
                   lambda: in_thread(items[:min(n, 2 * c)]),
                   f"async_notify_multiple_devices in chunks of {c}, from a thread (it runs its "
                   "own loop); it opens a ClientSession (a connection) per message and fetches a "
                   "token per chunk"),
    ]


def firebase_contestants(report: Report, args: argparse.Namespace, base: str,
                         items: Sequence[Push], stack: AsyncExitStack) -> list[Contestant]:
    why = import_or_none("firebase_admin.messaging")
    if why:
        report.skip("firebase-admin", why + " (.venv/bin/pip install firebase-admin)")
        return []
    import firebase_admin
    import requests
    from firebase_admin import _http_client, credentials, messaging

    n, c = len(items), args.concurrency
    loop = asyncio.get_running_loop()
    sa = doubles.service_account(f"{base}/token")
    # The service builds its URL from this class attribute when it is first used for an app.
    messaging._MessagingService.FCM_URL = f"{base}/v1/projects/{{0}}/messages:send"
    app = firebase_admin.initialize_app(credentials.Certificate(sa),
                                        options={"projectId": doubles.PROJECT, "httpTimeout": 15},
                                        name=f"fanout-{secrets.token_hex(3)}")
    service = messaging._get_messaging_service(app)

    async def close() -> None:
        await service._async_client.aclose()
        # delete_app closes the async client with asyncio.run(): not from inside a running loop.
        await loop.run_in_executor(None, firebase_admin.delete_app, app)

    stack.push_async_callback(close)
    # firebase-admin mounts a pool of 100 for fcm.googleapis.com; the same for the double.
    service._client.session.mount(base, requests.adapters.HTTPAdapter(
        pool_connections=1, pool_maxsize=max(c, 100), max_retries=_http_client.DEFAULT_RETRY_CONFIG))
    warnings.filterwarnings("ignore", "Message.token is deprecated", DeprecationWarning)
    # google-auth looks up the account's "regional access boundary" at googleapis.com in a
    # background thread; offline it fails and backs off, without holding the sends.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    logging.getLogger("google.auth").setLevel(logging.ERROR)
    fb_messages = [messaging.Message(
        token=p.token, notification=messaging.Notification(title=p.title, body=p.body),
        data=p.data, android=messaging.AndroidConfig(priority="normal"),
        apns=messaging.APNSConfig(headers={"apns-priority": "5"}),
        webpush=messaging.WebpushConfig(headers={"Urgency": "normal"})) for p in items]

    def send_each(batch: Sequence[Any]) -> int:
        return sum(messaging.send_each(list(part), app=app).success_count
                   for part in chunks(batch, c))

    async def sync_api(batch: Sequence[Any]) -> int:
        return await loop.run_in_executor(None, send_each, batch)

    async def async_api(batch: Sequence[Any]) -> int:
        ok = 0
        for part in chunks(batch, 500):
            ok += (await messaging.send_each_async(list(part), app=app)).success_count
        return ok

    return [
        Contestant("fb_send_each", "fb-admin send_each", lambda: sync_api(fb_messages),
                   lambda: sync_api(fb_messages[:min(n, 4 * c)]),
                   f"send_each in chunks of {c} (it starts a thread per message of a chunk), "
                   f"requests pool of {max(c, 100)}"),
        Contestant("fb_send_each_async", "fb-admin …_async", lambda: async_api(fb_messages),
                   lambda: async_api(fb_messages[:min(n, 1000)]),
                   "send_each_async in chunks of 500 (its maximum), httpx AsyncClient (HTTP/1.1 "
                   "to a plain-http double; its default pool of 100 connections)"),
    ]


async def part_libs(report: Report, args: argparse.Namespace, double: doubles.Double) -> None:
    n, c, base = args.n, args.concurrency, double.base_url
    items = pushes(n, fcm_token)
    console.print(f"[bold]FCM libraries[/], {n:,} requests per round, C = {c}, each round "
                  f"interleaved with one of Tidings' FcmProvider: {double.describe()}")
    async with AsyncExitStack() as stack:
        contestants = [*pyfcm_contestants(report, args, base, items, stack),
                       *firebase_contestants(report, args, base, items, stack)]
        if not contestants:
            return
        mine = await tidings_fcm(report, args, base, items, stack, "fcm_tidings_libs")
        if mine is not None:
            contestants.insert(0, mine)
        await contest(report, "libs", n, args.rounds, double, contestants)


# --- APNs ----------------------------------------------------------------------------------

class RawApns(asyncio.Protocol):
    """The least an HTTP/2 APNs client can do: one connection, C streams in flight, the next
    request started from the callback that saw a response end, header validation off."""

    def __init__(self, authority: str, bearer: str) -> None:
        import h2.config
        import h2.connection

        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False))
        # Pseudo-headers first (RFC 9113 8.3): the path goes between the two lists.
        self.pseudo = [(b":method", b"POST"), (b":scheme", b"https"),
                       (b":authority", authority.encode())]
        self.fixed = [(b"authorization", bearer.encode()), (b"apns-topic", APNS_TOPIC.encode()),
                      (b"apns-push-type", b"alert"), (b"apns-priority", b"5")]
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future[int] | None = None
        self.queue: Any = iter(())
        self.status: dict[int, bytes] = {}
        self.blocked: list[tuple[int, bytes]] = []
        self.inflight = 0
        self.ok = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        import h2.settings

        self.transport = transport  # type: ignore[assignment]
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0,
                                   h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        self.conn.increment_flow_control_window(1 << 24)
        transport.write(self.conn.data_to_send())  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost: {exc}"))

    def run(self, items: Sequence[Push], c: int) -> asyncio.Future[int]:
        self.done = asyncio.get_running_loop().create_future()
        self.queue, self.ok, self.inflight = iter(items), 0, 0
        for _ in range(c):
            if not self._next():
                break
        assert self.transport is not None
        self.transport.write(self.conn.data_to_send())
        return self.done

    def _next(self) -> bool:
        p = next(self.queue, None)
        if p is None:
            return False
        conn = self.conn
        sid = conn.get_next_available_stream_id()
        body = orjson.dumps({"aps": {"alert": {"title": p.title, "body": p.body}}, **p.data})
        conn.send_headers(sid, [*self.pseudo, (b":path", b"/3/device/" + p.token.encode()),
                                *self.fixed, (b"content-length", str(len(body)).encode())])
        if conn.local_flow_control_window(sid) >= len(body):
            conn.send_data(sid, body, end_stream=True)
        else:
            self.blocked.append((sid, body))
        self.inflight += 1
        return True

    def data_received(self, data: bytes) -> None:
        import h2.events

        conn = self.conn
        event: Any
        for event in conn.receive_data(data):
            kind = type(event)
            if kind is h2.events.ResponseReceived:
                for name, value in event.headers:
                    if name == b":status":
                        self.status[event.stream_id] = value
                        break
            elif kind is h2.events.StreamEnded or kind is h2.events.StreamReset:
                if self.status.pop(event.stream_id, None) == b"200":
                    self.ok += 1
                self.inflight -= 1
                self._next()
            elif kind is h2.events.DataReceived:
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif kind is h2.events.WindowUpdated and self.blocked:
                waiting, self.blocked = self.blocked, []
                for sid, body in waiting:
                    if conn.local_flow_control_window(sid) >= len(body):
                        conn.send_data(sid, body, end_stream=True)
                    else:
                        self.blocked.append((sid, body))
            elif kind is h2.events.RemoteSettingsChanged and not self.ready.done():
                self.ready.set_result(None)
        out = conn.data_to_send()
        if out:
            assert self.transport is not None
            self.transport.write(out)
        if self.inflight == 0 and self.done is not None and not self.done.done():
            self.done.set_result(self.ok)


def apns_jwt(pem: str, team_id: str, key_id: str) -> str:
    import jwt

    return jwt.encode({"iss": team_id, "iat": int(time.time())}, pem, algorithm="ES256",
                      headers={"kid": key_id})


async def part_apns(report: Report, args: argparse.Namespace, double: doubles.Double,
                    tls: doubles.Tls) -> None:
    why = import_or_none("h2")
    if why:
        report.skip("APNs", why)
        return
    n, c = args.n, args.concurrency
    items = pushes(n, apns_token)
    pem, team_id, key_id = doubles.ec_p256_pem(), "ABCDE12345", "KEYID12345"
    console.print(f"[bold]APNs[/], {n:,} requests per round, C = {c}: {double.describe()}")
    loop = asyncio.get_running_loop()
    async with AsyncExitStack() as stack:
        transport, proto = await loop.create_connection(
            lambda: RawApns(f"127.0.0.1:{double.port}", f"bearer {apns_jwt(pem, team_id, key_id)}"),
            "127.0.0.1", double.port, ssl=tls.client_context(), server_hostname="127.0.0.1")
        stack.callback(transport.close)
        ssl_obj = transport.get_extra_info("ssl_object")
        if ssl_obj is None or ssl_obj.selected_alpn_protocol() != "h2":
            report.skip("APNs", "the double did not agree to h2 by ALPN")
            return
        await asyncio.wait_for(proto.ready, 5)

        async def raw(batch: Sequence[Push]) -> int:
            return await proto.run(batch, c)

        import h2

        contestants = [Contestant("apns_raw", "raw h2", lambda: raw(items),
                                  lambda: raw(items[:min(n, 2000)]),
                                  f"h2 {h2.__version__}, one TLS connection, {c} streams")]
        why = import_or_none("tidings.adapters.providers.apns")
        if why:
            report.skip("Tidings ApnsProvider", why)
        else:
            import ssl

            from tidings.adapters.providers.apns import ApnsProvider
            from tidings.adapters.providers.options import ProviderOptions

            trust = ssl.create_default_context(cafile=str(tls.ca))  # ALPN is the provider's job
            provider = ApnsProvider({"team_id": team_id, "key_id": key_id, "private_key": pem,
                                     "topic": APNS_TOPIC, "environment": "production",
                                     "endpoint": double.base_url},
                                    ProviderOptions(max_concurrency=c, ssl_context=trust))
            stack.push_async_callback(provider.close)
            messages = outbound(items, "apns", "ios")

            async def tidings_round(batch: Sequence[Any]) -> int:
                return tidings_results(await provider.send(batch))

            contestants.append(Contestant(
                "apns_tidings", "Tidings Apns", lambda: tidings_round(messages),
                lambda: tidings_round(messages[:min(n, 2000)]),
                f"one send() of {n:,} messages, max_concurrency={c}"))
        await contest(report, "apns", n, args.rounds, double, contestants)


# --- end to end through the engine -----------------------------------------------------------

async def part_engine(report: Report, args: argparse.Namespace, double: doubles.Double,
                      backend: str) -> None:
    why = import_or_none("tidings.adapters.providers.fcm")
    if why:
        report.skip(f"engine ({backend})", why)
        return
    if backend == "postgres":
        why = import_or_none("asyncpg")
        if why:
            report.skip("engine (postgres)", why)
            return
    for scenario in ("one user", "many users"):
        await engine_scenario(report, args, double, backend, scenario)


async def engine_scenario(report: Report, args: argparse.Namespace, double: doubles.Double,
                          backend: str, scenario: str) -> None:
    import httpx
    from _common import bench_store
    from sqlalchemy import func, insert, select

    from tidings.adapters.store.sql.schema import deliveries, devices, users
    from tidings.bootstrap import build
    from tidings.domain.ids import UlidFactory
    from tidings.entrypoints.http.app import create_app
    from tidings.settings import Settings

    n, c, base = args.n, args.concurrency, double.base_url
    ulids = UlidFactory()
    app_id = "bench"
    key = f"engine_{backend}_{'one' if scenario == 'one user' else 'many'}"
    label = (f"{backend}: 1 user x {n:,} devices" if scenario == "one user"
             else f"{backend}: {n:,} users x 1 device")
    try:
        store_cm = bench_store(backend, "bench_fanout", postgres_url=args.postgres_url)
        bs = await store_cm.__aenter__()
    except Exception as exc:  # noqa: BLE001 -- an unreachable database skips the part
        report.skip(label, f"{type(exc).__name__}: {exc}")
        return
    try:
        settings = Settings(database_url=bs.url, secret_key=SECRET_KEY, admin_key=ADMIN_KEY,
                            rate_limit_per_second=0, worker_batch_size=args.batch,
                            provider_max_requests=c, database_schema=bs.schema)
        container = build(settings, store=bs.store)
        await container.prepare()
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(container)),
                                 base_url="http://tidings.bench", timeout=120)
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        sa = doubles.service_account(f"{base}/token")
        r = await http.put(f"/v1/apps/{app_id}", headers=admin, json={
            "name": "Bench", "providers": {"fcm": {"credentials": sa, "endpoint": base}},
            "routing": {"push": {"android": "fcm"}}})
        r.raise_for_status()
        r = await http.post(f"/v1/apps/{app_id}/keys", headers=admin)
        r.raise_for_status()
        auth = {"Authorization": f"Bearer {r.json()['key']}"}

        user_ids = ["solo"] if scenario == "one user" else [f"user-{i:06d}" for i in range(n)]
        # Device 0 through the API, so that its rows are what registration writes; the rest in
        # bulk Core inserts of the same columns through the store's own connection.
        r = await http.post(f"/v1/users/{user_ids[0]}/devices", headers=auth,
                            json={"platform": "android", "token": fcm_token(0)})
        r.raise_for_status()
        at = int(time.time() * 1000)
        device_rows, user_rows = [], []
        for i in range(1, n):
            uid = user_ids[0] if scenario == "one user" else user_ids[i]
            token = fcm_token(i)
            device_rows.append({
                "id": ulids.new(at), "app_id": app_id, "user_id": uid, "platform": "android",
                "token": token, "token_key": hashlib.sha256(token.encode()).hexdigest(),
                "provider": None, "enabled": True, "disabled_reason": None, "device_info": None,
                "app_version": None, "created_at": at, "last_seen_at": at, "provider_ref": None})
            if scenario != "one user":
                user_rows.append({"app_id": app_id, "id": uid, "attributes": {},
                                  "created_at": at, "updated_at": at})
        async with bs.store.transaction() as tx:
            conn = tx.connection
            for part in chunks(user_rows, 5000):
                await conn.execute(insert(users), list(part))
            for part in chunks(device_rows, 5000):
                await conn.execute(insert(devices), list(part))

        body = {"channels": ["push"], "title": TITLE, "body": "Your parcel arrives on Tuesday",
                "data": {"kind": "shipping"}}
        timings: list[tuple[float, float]] = []
        limit = math.ceil(n / args.batch) * 3 + 10

        async def one_round() -> int:
            started = time.perf_counter()
            if scenario == "one user":
                posts = [{"to": {"user_id": user_ids[0]}, **body}]
            else:
                posts = [{"to": {"user_ids": list(part)}, **body} for part in chunks(user_ids, 1000)]
            for doc in posts:
                resp = await http.post("/v1/notifications", headers=auth, json=doc)
                if resp.status_code != 202:
                    raise RuntimeError(f"POST /v1/notifications: {resp.status_code} {resp.text[:300]}")
            accepted = time.perf_counter()
            handled = 0

            async def lane() -> None:
                # As the worker's lanes do (TIDINGS_WORKER_LANES): rounds overlap.
                nonlocal handled
                for _ in range(limit):
                    got = await container.dispatcher.run_once()
                    handled += got
                    if got == 0:
                        break

            await asyncio.gather(*(lane() for _ in range(args.lanes)))
            timings.append((accepted - started, time.perf_counter() - accepted))
            return handled

        async def warmup() -> None:
            # Builds the provider, fetches its token, fills the pool: not part of a round.
            await one_round()
            timings.clear()

        logging.getLogger("tidings").setLevel(logging.WARNING)
        m = await measure(report, key, "engine", label, n, args.rounds, one_round, double, warmup,
                          note=f"{backend}, batch {args.batch}, lanes {args.lanes}, "
                               f"provider_max_requests={c}")
        m.note += ("; accept / deliver s per round: "
                   + ", ".join(f"{a:.2f}/{d:.2f}" for a, d in timings))
        async with bs.store.reader() as tx:
            conn = tx.connection
            by_status = {row[0]: row[1] for row in await conn.execute(
                select(deliveries.c.status, func.count()).group_by(deliveries.c.status))}
            names = {row[0] for row in await conn.execute(
                select(deliveries.c.provider_message_id).distinct().limit(3))}
        expected = n * (args.rounds + 1)
        if by_status != {"sent": expected}:
            console.print(f"  [red]deliveries by status {by_status}; expected {expected:,} sent[/]")
            m.errors += expected - by_status.get("sent", 0)
        else:
            console.print(f"  checked: all {expected:,} deliveries sent, provider ids {sorted(names)}")
        await http.aclose()
        await container.close()
    finally:
        await store_cm.__aexit__(None, None, None)


# --- output --------------------------------------------------------------------------------

def summary(report: Report, args: argparse.Namespace) -> None:
    ms = report.measures
    table = Table(title=f"fan-out, {args.n:,} requests per round, C = {args.concurrency}, medians "
                  f"of {args.rounds} rounds (client on core {CLIENT_CORE}, doubles on core {DOUBLE_CORE})")
    for col in ("part", "client", "req/s", "CPU µs/req", "double busy", "errors",
                "RSS MiB r1→last", "ratio wall", "ratio CPU", "target"):
        table.add_column(col, justify="left" if col in ("part", "client", "target") else "right")

    def compare(a: str, b: str, label: str, target: float) -> tuple[str, str, str]:
        """a / b by wall-clock rate and by CPU cost; the target is judged on both."""
        if a not in ms or b not in ms:
            return "-", "-", "-"
        if ms[a].errors or ms[b].errors:
            return "-", "-", "[red]not comparable: errors[/]"
        wall, cpu = ratio(ms[a].rate, ms[b].rate), ratio(ms[a].cpu_rate, ms[b].cpu_rate)
        return f"{wall:.2f}", f"{cpu:.2f}", f"{label} ≥ {target}: {verdict(min(wall, cpu) >= target)}"

    rows = {"fcm_tidings": compare("fcm_tidings", "fcm_bare", "Tidings / bare", PROVIDER_TARGET),
            "apns_tidings": compare("apns_tidings", "apns_raw", "Tidings / raw h2", PROVIDER_TARGET)}
    mine = "fcm_tidings_libs" if "fcm_tidings_libs" in ms else "fcm_tidings"
    for key in ("pyfcm_threads", "pyfcm_async", "fb_send_each", "fb_send_each_async"):
        rows[key] = compare(mine, key, "Tidings / it", 1.0)
    for key, m in ms.items():
        if m.part == "engine" and "fcm_tidings" in ms:
            wall, cpu, _ = compare(key, "fcm_tidings", "", 0)
            rows[key] = (wall, cpu, "(engine / Tidings Fcm)")
    for key, m in ms.items():
        wall, cpu, target = rows.get(key, ("", "", ""))
        table.add_row(m.part, m.name, f"{m.rate:,.0f}", f"{median(m.cpu_us):.0f}",
                      f"{median(m.double_busy):.0%}", str(m.errors),
                      f"{m.rss_first:.0f} → {m.rss_end:.0f}", wall, cpu, target)
    console.print(table)
    console.print("req/s, CPU µs/req (this process's user + system time, all its threads) and "
                  "double busy (its CPU time over the round's wall time): medians of the rounds. "
                  "ratio wall: req/s over the baseline's; ratio CPU: the baseline's CPU µs per "
                  "request over this one's, which other load on the core does not move much.")
    for m in ms.values():
        rounds = ", ".join(f"{x:,.0f}" for x in m.rates)
        console.print(f"  {m.name}: req/s per round {rounds}" + (f"; {m.note}" if m.note else ""))
    rss = Table(title="memory of this process (MiB): peak = ru_maxrss, now = VmRSS, anon = RssAnon")
    for col in ("part", "peak before", "peak after", "now before", "now after", "anon before",
                "anon after"):
        rss.add_column(col, justify="left" if col == "part" else "right")
    for part, pb, nb, ab, pa, na, aa in report.rss:
        rss.add_row(part, *(f"{v:.0f}" for v in (pb, pa, nb, na, ab, aa)))
    console.print(rss)
    for line in report.skipped:
        console.print(f"[yellow]skipped[/] {line}")
    for line in report.notes:
        console.print(line)


# --- main ----------------------------------------------------------------------------------

def pin_self() -> str:
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        return "not pinned (fewer than 2 cores)"
    os.sched_setaffinity(0, {CLIENT_CORE})
    return f"pinned to core {CLIENT_CORE}"


async def run(args: argparse.Namespace) -> Report:
    report = Report()
    parts = [p for p in PARTS if p in args.only]
    folder = Path(tempfile.mkdtemp(prefix="fanout_tls_"))
    tls = doubles.make_tls(folder)
    engine = args.double
    if engine in ("auto", "nginx") and not doubles.have_nginx():
        if engine == "nginx":
            report.notes.append("nginx not found: the Python doubles are used instead")
        engine = "python"
    core = DOUBLE_CORE if (os.cpu_count() or 1) >= 2 else None
    started: list[doubles.Double] = []

    def start(kind: str) -> doubles.Double | None:
        try:
            d = doubles.start(kind, engine, core, tls)
        except Exception as exc:  # noqa: BLE001 -- a double that cannot start skips its parts
            report.skip(f"the {kind} double ({engine})", f"{type(exc).__name__}: {exc}")
            return None
        started.append(d)
        return d

    try:
        fcm_double = start("fcm") if {"fcm", "engine", "libs"} & set(parts) else None
        apns_double = start("apns") if "apns" in parts else None
        for part in parts:
            before = rss_mb()
            if part == "fcm" and fcm_double:
                await part_fcm(report, args, fcm_double)
            elif part == "apns" and apns_double:
                await part_apns(report, args, apns_double, tls)
            elif part == "engine" and fcm_double:
                for backend in ["sqlite", *(["postgres"] if args.postgres else [])]:
                    await part_engine(report, args, fcm_double, backend)
            elif part == "libs" and fcm_double:
                await part_libs(report, args, fcm_double)
            else:
                continue
            gc.collect()
            after = rss_mb()
            report.rss.append((part, *before, *after))
            console.print(f"  RSS {part}: peak {before[0]:.0f} → {after[0]:.0f} MiB, "
                          f"now {before[1]:.0f} → {after[1]:.0f} MiB, anon {before[2]:.0f} → "
                          f"{after[2]:.0f} MiB")
    finally:
        for d in started:
            d.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return report


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000, help="requests (deliveries) per round")
    p.add_argument("--concurrency", "-c", type=int, default=100,
                   help="requests in flight: lanes, streams, threads, max_concurrency")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--only", default=",".join(PARTS),
                   help=f"comma-separated parts among {', '.join(PARTS)} (default: all)")
    p.add_argument("--postgres", action="store_true", help="also run the engine part on PostgreSQL")
    p.add_argument("--postgres-url", default=None)
    p.add_argument("--batch", type=int, default=500, help="the worker's batch size (engine part)")
    p.add_argument("--lanes", type=int, default=2,
                   help="rounds in flight at once, as TIDINGS_WORKER_LANES (engine part)")
    p.add_argument("--double", choices=("auto", "nginx", "python"), default="auto",
                   help="what answers as FCM and APNs (auto: nginx when installed)")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = p.parse_args()
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only - set(PARTS)
    if unknown:
        p.error(f"unknown part(s) {sorted(unknown)}; choose among {', '.join(PARTS)}")
    if args.postgres_url is None:
        from _common import POSTGRES_URL
        args.postgres_url = POSTGRES_URL
    return args


def main() -> None:
    args = parse()
    logging.basicConfig(level=logging.WARNING)
    pinned = pin_self()
    loop_name = args.loop
    if args.loop == "uvloop":
        try:
            import uvloop
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            loop_name = "asyncio (uvloop not installed)"
    console.print(f"[bold]bench/fanout.py[/]: n = {args.n:,}, C = {args.concurrency}, "
                  f"{args.rounds} rounds, parts {', '.join(p for p in PARTS if p in args.only)}; "
                  f"this process {pinned}, loop {loop_name}, Python {sys.version.split()[0]}")
    check_quiet()
    report = asyncio.run(run(args))
    summary(report, args)


if __name__ == "__main__":
    main()
