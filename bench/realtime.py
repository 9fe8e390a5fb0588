"""Real-time streams: memory per held WebSocket, latency of a notification to its user's
stream, one event to every connection, and connect/disconnect churn, through a real
`tidings serve`, against a bare `websockets` server and nginx + nchan measured in the same run.

    .venv/bin/python bench/realtime.py [--connections 10000] [--rounds 5] [--batch 1000]
        [--only memory,latency,broadcast,churn] [--postgres] [--redis]

One `tidings serve` (SQLite file in a temporary folder by default, TIDINGS_LOG_LEVEL=WARNING, no
rate limit), the bare server (bench/_realtime_bare.py: `websockets` on uvloop, no compression,
`websockets.broadcast`) and nginx with nchan (bench/_realtime_nchan.py, one process) run pinned to
core 0. This process (setup, the HTTP load: aiohttp, keep-alive) and the client processes
(bench/_realtime_client.py, raw sockets with kernel receive timestamps) run pinned to core 1.
Every server gets the same clients: --connections WebSockets spread over --client-procs
processes, held from the first part to the end.

Parts:
- memory: the server's VmRSS (and RssAnon) before and with --connections open, idle
  connections, each counted open once its first message arrived (Tidings' `unread_count`, the
  bare server's greeting; nchan sends none, so its connections count once upgraded); per
  connection = (with - before) / n. Target ≤ 15 KiB for Tidings.
- latency: --rate notifications/s for --duration s, each `POST /v1/notifications` to one random
  connected user (`channels: ["in_app"]`); from the POST's response arriving (time.time() here) to
  that user's socket receiving `notification.created` (the kernel's receive timestamp, same
  clock). Target p99 ≤ 50 ms.
- broadcast: one event to every connection, --rounds rounds interleaved across the servers:
  Tidings gets ceil(n / --batch) concurrent POSTs of --batch user_ids; the bare server one
  `websockets.broadcast`; nchan one publish. Deliveries/s from trigger to last received and from
  first to last received (for Tidings these include writing the n notifications to the store),
  and per group of --batch connections (Tidings: one POST's recipients), from the group's first
  to its last receipt: the fan-out alone. Targets: Tidings / bare ≥ 0.8, Tidings / nchan ≥ 0.5.
- churn: --churn-cycles connect → first message → close cycles, --churn-concurrency at once, on
  Tidings and on the bare server: cycles/s, and the server's RSS, open files and (Tidings) the
  `tidings_stream_connections` gauge before and after.

Nothing asserts a timing: the figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import math
import os
import random
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _realtime_bare as bare_server
import _realtime_nchan as nchan_server
import aiohttp
import orjson
from _common import (
    ADMIN_KEY,
    POSTGRES_URL,
    SECRET_KEY,
    check_quiet,
    console,
    median,
    percentile,
    ratio,
    verdict,
)
from _procs import cpu_seconds, free_port, pin_prefix
from rich.table import Table

BENCH = Path(__file__).resolve().parent
CLIENT_CORE, SERVER_CORE = 1, 0
PARTS = ("memory", "latency", "broadcast", "churn")
MEMORY_TARGET_KIB = 15.0
LATENCY_TARGET_MS = 50.0
BARE_TARGET, NCHAN_TARGET = 0.8, 0.5
INTERLEAVE_LIKE = 1.1  # above this, per-group "own" rates of two servers do not compare
MAX_USER_IDS = 1000  # the API's limit per request
APP = "bench"


# --- processes -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mem:
    rss_kib: int
    anon_kib: int
    fds: int


def memory(pid: int) -> Mem:
    rss = anon = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1])
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = -1
    return Mem(rss, anon, fds)


def has_uvloop(pid: int) -> bool:
    try:
        return "uvloop" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


async def settle(pids: Sequence[int], idle_below: float = 0.05, window: float = 0.5,
                 at_most: float = 120.0) -> float:
    """Wait until every process uses less than `idle_below` of a core; the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < at_most:
        before = [cpu_seconds(p) for p in pids]
        await asyncio.sleep(window)
        if all((cpu_seconds(p) - b) / window < idle_below for p, b in zip(pids, before, strict=True)):
            break
    return time.monotonic() - started


class Proc:
    """A server subprocess this script started and stops by its pid (SIGINT, then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.log = folder / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, env=env, cwd=folder, stdout=out,
                                         stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def wait_http(self, url: str, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
                with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                    async with s.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {url} within {within:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


class Clients:
    """The client processes (bench/_realtime_client.py), all pinned to the client core."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, count: int, folder: Path) -> None:
        for i in range(count):
            err = (folder / f"client-{i}.log").open("wb")
            proc = await asyncio.create_subprocess_exec(
                *pin_prefix(CLIENT_CORE), sys.executable, str(BENCH / "_realtime_client.py"),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
                limit=1 << 28)
            err.close()
            self.procs.append(proc)

    async def ask(self, i: int, cmd: dict[str, Any]) -> dict[str, Any]:
        proc = self.procs[i]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(orjson.dumps(cmd) + b"\n")
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client process {i} ended (exit {proc.returncode})")
        answer: dict[str, Any] = orjson.loads(line)
        if "error" in answer:
            raise RuntimeError(f"client process {i}: {answer['error']}")
        return answer

    async def all(self, cmd: dict[str, Any] | Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(
            self.ask(i, cmd(i) if callable(cmd) else cmd) for i in range(len(self.procs)))))

    def share(self, items: Sequence[Any], i: int) -> list[Any]:
        return list(items[i::len(self.procs)])

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None and proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.write(b'{"op": "quit"}\n')
                    await proc.stdin.drain()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# --- the servers -------------------------------------------------------------------------------

@dataclass
class Server:
    """One server under test: how to reach its stream, and how to send one event to all."""

    key: str
    name: str
    pid: int
    port: int
    paths: list[str]
    greets: bool  # sends a first message on connect
    broadcast: Callable[[str], Awaitable[dict[str, float]]] = field(repr=False)
    connected: int = 0
    extensions: Counter[str] = field(default_factory=Counter)
    connect_errors: Counter[str] = field(default_factory=Counter)
    connect_seconds: float = math.nan
    mem_before: Mem | None = None
    mem_with: Mem | None = None
    gauge: str = ""


@dataclass(frozen=True)
class Batch:
    """What one group of users (Tidings: the recipients of one POST; a baseline: the same
    connections) received in one round, by kernel receive timestamp."""

    received: int
    first: float
    last: float
    during: int  # deliveries to any connection of the round from `first` to `last`

    @property
    def span(self) -> float:
        return self.last - self.first

    def rate(self) -> float:
        return self.received / self.span if self.received > 1 and self.span > 0 else math.nan

    def busy_rate(self) -> float:
        return self.during / self.span if self.received > 1 and self.span > 0 else math.nan

    @property
    def interleave(self) -> float:
        """1 when the server wrote this group alone; n / group size when its writes were spread
        over the whole round."""
        return self.during / self.received if self.received else math.nan


def batches(stamps: Sequence[float], tags: Sequence[int], size: int) -> list[Batch]:
    """Groups a round's receive times by connection number // size (connection i holds user i,
    and Tidings' POST j addressed users j*size .. j*size+size-1)."""
    groups: dict[int, list[float]] = {}
    for stamp, tag in zip(stamps, tags, strict=True):
        if tag >= 0:
            groups.setdefault(tag // size, []).append(stamp)
    ordered = sorted(stamps)
    out = []
    for _, group in sorted(groups.items()):
        first, last = min(group), max(group)
        during = bisect.bisect_right(ordered, last) - bisect.bisect_left(ordered, first)
        out.append(Batch(len(group), first, last, during))
    return out


@dataclass
class Round:
    trigger: float  # time.time() when the first request was sent
    first: float  # earliest kernel receive timestamp
    last: float
    first_read: float  # the same, as read by the client processes
    last_read: float
    received: int
    missing: int
    no_kernel_ts: int
    server_cpu: float
    answered: float  # seconds until the trigger's HTTP answer(s) arrived
    server_wrote: float = math.nan  # bare server: seconds its broadcast() call took
    anon_mib: float = math.nan  # the server's RssAnon after the round
    batches: list[Batch] = field(default_factory=list)

    def rate(self, since_trigger: bool) -> float:
        span = self.last - (self.trigger if since_trigger else self.first)
        return self.received / span if span > 0 else math.nan


@dataclass
class Report:
    servers: dict[str, Server] = field(default_factory=dict)
    rounds: dict[str, list[Round]] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    churn: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        self.notes.append(line)
        console.print(line)


async def call(session: aiohttp.ClientSession, method: str, url: str, expect: set[int],
               headers: dict[str, str] | None = None, json: object = None) -> dict[str, Any]:
    async with session.request(method, url, headers=headers, json=json) as r:
        body = await r.read()
        if r.status not in expect:
            raise RuntimeError(f"{method} {url} answered {r.status}: {body[:300]!r}")
        return orjson.loads(body) if body else {}


async def setup_tidings(session: aiohttp.ClientSession, base: str,
                        n: int) -> tuple[str, list[str], list[str]]:
    """The app, a key, n users and a user token for each (setup: not measured)."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    await call(session, "PUT", f"{base}/v1/apps/{APP}", {200, 201}, admin, {"name": "Bench"})
    key = (await call(session, "POST", f"{base}/v1/apps/{APP}/keys", {201}, admin))["key"]
    auth = {"Authorization": f"Bearer {key}"}
    users = [f"user-{i:05d}" for i in range(n)]
    tokens: list[str] = [""] * n
    gate = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with gate:
            await call(session, "PUT", f"{base}/v1/users/{users[i]}", {200, 201}, auth, {})
            doc = await call(session, "POST", f"{base}/v1/users/{users[i]}/tokens", {200, 201}, auth,
                             {"ttl": 24 * 3600})
            tokens[i] = doc["token"]

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    console.print(f"  {n:,} users and user tokens made in {time.perf_counter() - started:.1f} s")
    return key, users, tokens


async def gauge(session: aiohttp.ClientSession, base: str) -> str:
    try:
        async with session.get(f"{base}/metrics") as r:
            text = (await r.read()).decode()
    except aiohttp.ClientError as exc:
        return f"({type(exc).__name__})"
    found = re.search(r"^tidings_stream_connections (\S+)$", text, re.M)
    return str(int(float(found.group(1)))) if found else "(no gauge)"


# --- parts -----------------------------------------------------------------------------------

async def connect(report: Report, clients: Clients, server: Server, args: argparse.Namespace,
                  session: aiohttp.ClientSession) -> None:
    """Part 1: RSS before and with the connections held."""
    # Warm-up, not measured: the first connections load code and fill caches once.
    warm = server.paths[:min(200, len(server.paths))]
    await clients.ask(0, {"op": "connect", "group": "warm", "host": "127.0.0.1", "port": server.port,
                          "paths": warm, "wait_first": server.greets, "offer_deflate": args.offer_deflate})
    await clients.ask(0, {"op": "close", "group": "warm"})
    await settle([server.pid])
    await asyncio.sleep(1.0)
    server.mem_before = memory(server.pid)
    answers = await clients.all(lambda i: {
        "op": "connect", "group": server.key, "host": "127.0.0.1", "port": server.port,
        "paths": clients.share(server.paths, i), "tags": clients.share(range(len(server.paths)), i),
        "wait_first": server.greets, "offer_deflate": args.offer_deflate,
        "concurrency": args.connect_concurrency, "timeout": 120})
    server.connected = sum(a["ok"] for a in answers)
    server.connect_seconds = max(a["seconds"] for a in answers)
    for a in answers:
        server.extensions.update(a["extensions"])
        server.connect_errors.update(a["errors"])
    await settle([server.pid])
    await asyncio.sleep(2.0)
    await settle([server.pid])
    server.mem_with = memory(server.pid)
    if server.key == "tidings":
        server.gauge = await gauge(session, f"http://127.0.0.1:{server.port}")
    per = (server.mem_with.rss_kib - server.mem_before.rss_kib) / max(1, server.connected)
    console.print(f"  {server.name}: {server.connected:,} connections in {server.connect_seconds:.1f} s, "
                  f"RSS {server.mem_before.rss_kib / 1024:.0f} → {server.mem_with.rss_kib / 1024:.0f} MiB, "
                  f"{per:.1f} KiB each; extensions {dict(server.extensions)}"
                  + (f"; [red]errors {dict(server.connect_errors)}[/]" if server.connect_errors else "")
                  + (f"; gauge {server.gauge}" if server.gauge else ""))


async def one_round(clients: Clients, server: Server, marker: str, batch: int) -> Round:
    await clients.all({"op": "arm", "group": server.key, "marker": marker})
    cpu0 = cpu_seconds(server.pid)
    trigger = time.time()
    answer = await server.broadcast(marker)
    answered = time.time() - trigger
    got = await clients.all({"op": "collect", "group": server.key, "timeout": 120})
    cpu1 = cpu_seconds(server.pid)
    kernel = [k for a in got for k in a["kernel"]]
    read = [r for a in got for r in a["read"]]
    tags = [t for a in got for t in a["tags"]]
    missing = sum(a["missing"] for a in got)
    # Where the kernel gave no timestamp (never seen here), the read time stands in.
    stamps = [r if math.isnan(k) else k for k, r in zip(kernel, read, strict=True)]
    return Round(trigger, min(stamps, default=math.nan), max(stamps, default=math.nan),
                 min(read, default=math.nan), max(read, default=math.nan), len(kernel), missing,
                 sum(math.isnan(k) for k in kernel), cpu1 - cpu0, answered,
                 answer.get("ended", math.nan) - answer.get("started", math.nan),
                 memory(server.pid).anon_kib / 1024, batches(stamps, tags, batch))


async def part_broadcast(report: Report, clients: Clients, servers: list[Server],
                         args: argparse.Namespace) -> None:
    pids = [s.pid for s in servers]
    for s in servers:  # warm-up round, not counted
        await settle(pids)
        r = await one_round(clients, s, f"warmup-{s.key}-{secrets.token_hex(4)}", args.batch)
        console.print(f"  warm-up {s.name}: {r.received:,} received, {r.missing} missing")
    for n in range(args.rounds):
        k = len(servers)
        for j in range(k):
            s = servers[(n + j) % k]
            waited = await settle(pids)
            r = await one_round(clients, s, f"round-{n}-{s.key}-{secrets.token_hex(4)}", args.batch)
            report.rounds.setdefault(s.key, []).append(r)
            console.print(
                f"  round {n + 1} {s.name}: trigger→last {r.last - r.trigger:.3f} s "
                f"({r.rate(True):,.0f}/s), first→last {r.last - r.first:.3f} s "
                f"({r.rate(False):,.0f}/s), per group of {args.batch:,}: "
                f"{median([b.rate() for b in r.batches]):,.0f}/s own, "
                f"{median([b.busy_rate() for b in r.batches]):,.0f}/s all in span (span "
                f"{median([b.span for b in r.batches]) * 1e3:.1f} ms), "
                f"read trigger→last {r.last_read - r.trigger:.3f} s, "
                f"answered {r.answered:.3f} s, server CPU {r.server_cpu:.2f} s, "
                f"received {r.received:,}, missing {r.missing}, server RssAnon {r.anon_mib:.0f} MiB"
                + (f", no kernel ts {r.no_kernel_ts}" if r.no_kernel_ts else "")
                + (f" (waited {waited:.1f} s for idle)" if waited > 1.5 else ""))


async def part_latency(report: Report, clients: Clients, server: Server, users: list[str],
                       session: aiohttp.ClientSession, key: str, args: argparse.Namespace) -> None:
    url = f"http://127.0.0.1:{server.port}/v1/notifications"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    total = int(args.rate * args.duration)
    posts: list[tuple[str, float, float]] = []  # (notification id, request sent, answer read)
    errors: Counter[str] = Counter()
    rng = random.Random(7)

    async def post(user: str) -> None:
        body = orjson.dumps({"to": {"user_ids": [user]}, "channels": ["in_app"],
                             "title": "Latency probe", "body": "Your order has shipped"})
        sent = time.time()
        try:
            async with session.post(url, data=body, headers=headers) as r:
                raw = await r.read()
                status = r.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            errors[type(exc).__name__] += 1
            return
        answered = time.time()
        if status != 202:
            errors[f"HTTP {status}"] += 1
            return
        posts.append((str(orjson.loads(raw)["items"][0]["id"]), sent, answered))

    await settle([server.pid])
    await clients.all({"op": "watch", "group": server.key, "on": True})
    cpu0, own0 = cpu_seconds(server.pid), time.process_time()
    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    for i in range(total):
        due = started + i / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post(rng.choice(users))))
    await asyncio.gather(*tasks)
    took = time.perf_counter() - started
    cpu1, own1 = cpu_seconds(server.pid), time.process_time()
    await asyncio.sleep(2.0)
    answers = await clients.all({"op": "watch", "group": server.key, "on": False})
    seen: dict[str, tuple[float, float]] = {}
    for a in answers:
        for nid, k, r in a["records"]:
            seen.setdefault(nid, (k, r))
    lat_kernel, lat_read, lat_sent, lat_post = [], [], [], []
    for nid, sent, answered in posts:
        lat_post.append(answered - sent)
        if nid in seen:
            k, r = seen[nid]
            k = r if math.isnan(k) else k
            lat_kernel.append(k - answered)
            lat_read.append(r - answered)
            lat_sent.append(k - sent)
    report.latency = {
        "posted": total, "accepted": len(posts), "errors": dict(errors), "seconds": took,
        "received": len(lat_kernel), "missing": len(posts) - len(lat_kernel),
        "kernel": lat_kernel, "read": lat_read, "sent": lat_sent, "post": lat_post,
        "server_cpu": (cpu1 - cpu0) / took, "own_cpu": (own1 - own0) / took,
        "closes": sum((Counter(a["closes"]) for a in answers), Counter())}
    console.print(f"  latency: {len(posts):,}/{total:,} accepted in {took:.1f} s "
                  f"({len(posts) / took:,.0f}/s), {len(lat_kernel):,} received; p50 "
                  f"{percentile(lat_kernel, 50) * 1e3:.1f} ms, "
                  f"p99 {percentile(lat_kernel, 99) * 1e3:.1f} ms, "
                  f"max {max(lat_kernel, default=math.nan) * 1e3:.1f} ms"
                  + (f"; [red]errors {dict(errors)}[/]" if errors else ""))


async def part_churn(report: Report, clients: Clients, server: Server, args: argparse.Namespace,
                     session: aiohttp.ClientSession) -> None:
    base = f"http://127.0.0.1:{server.port}"
    await settle([server.pid])
    before = memory(server.pid)
    gauge_before = await gauge(session, base) if server.key == "tidings" else ""
    per = args.churn_cycles // len(clients.procs)
    lanes = max(1, args.churn_concurrency // len(clients.procs))
    cpu0 = cpu_seconds(server.pid)
    answers = await clients.all(lambda i: {
        "op": "churn", "host": "127.0.0.1", "port": server.port,
        "paths": server.paths, "cycles": per + (1 if i < args.churn_cycles % len(clients.procs) else 0),
        "concurrency": lanes, "offer_deflate": args.offer_deflate, "timeout": 60})
    took = max(a["seconds"] for a in answers)
    cpu1 = cpu_seconds(server.pid)
    await settle([server.pid])
    await asyncio.sleep(2.0)
    after = memory(server.pid)
    gauge_after = await gauge(session, base) if server.key == "tidings" else ""
    ok = sum(a["ok"] for a in answers)
    errors = sum((Counter(a["errors"]) for a in answers), Counter())
    report.churn[server.key] = {"ok": ok, "errors": dict(errors), "seconds": took,
                                "before": before, "after": after, "gauge": (gauge_before, gauge_after),
                                "server_cpu": (cpu1 - cpu0) / took}
    console.print(f"  churn {server.name}: {ok:,} cycles in {took:.1f} s ({ok / took:,.0f}/s), "
                  f"RSS {before.rss_kib / 1024:.0f} → {after.rss_kib / 1024:.0f} MiB, open files "
                  f"{before.fds} → {after.fds}"
                  + (f", gauge {gauge_before} → {gauge_after}" if gauge_before else "")
                  + (f"; [red]errors {dict(errors)}[/]" if errors else ""))


# --- main ------------------------------------------------------------------------------------

def tidings_env(args: argparse.Namespace, folder: Path, schema: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update({"TIDINGS_ADMIN_KEY": ADMIN_KEY, "TIDINGS_SECRET_KEY": SECRET_KEY,
                "TIDINGS_LOG_LEVEL": "WARNING", "TIDINGS_RATE_LIMIT_PER_SECOND": "0"})
    if schema is not None:
        env["TIDINGS_DATABASE_URL"] = args.postgres_url
        env["TIDINGS_DATABASE_SCHEMA"] = schema
    else:
        env["TIDINGS_DATABASE_URL"] = f"sqlite+aiosqlite:///{folder / 'tidings.db'}"
    if args.redis:
        env["TIDINGS_REDIS_URL"] = args.redis_url
        env["TIDINGS_REDIS_CHANNEL_PREFIX"] = f"bench-realtime-{secrets.token_hex(4)}"
    return env


def log_problems(path: Path) -> list[str]:
    """Lines of a server log that look like trouble."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines
            if re.search(r"ERROR|CRITICAL|Traceback|Exception|WARNING", line)]


async def run(args: argparse.Namespace) -> Report:
    report = Report()
    folder = Path(tempfile.mkdtemp(prefix="tidings_bench_realtime_"))
    schema = f"bench_realtime_{secrets.token_hex(4)}" if args.postgres else None
    procs: list[Proc] = []
    nchan: nchan_server.Nchan | None = None
    clients = Clients()
    n = args.connections
    held = bool({"memory", "latency", "broadcast"} & args.only)
    others = bool({"memory", "broadcast", "churn"} & args.only)
    try:
        tidings = Proc("tidings", [*pin_prefix(SERVER_CORE), sys.executable, "-m", "tidings", "serve",
                                   "--host", "127.0.0.1", "--port", str(port := free_port())],
                       tidings_env(args, folder, schema), folder)
        procs.append(tidings)
        await tidings.wait_http(f"http://127.0.0.1:{port}/healthz")
        connector = aiohttp.TCPConnector(limit=args.http_connections)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=120)) as session:
            key, users, tokens = await setup_tidings(session, f"http://127.0.0.1:{port}", n)
            base = f"http://127.0.0.1:{port}"
            post_headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

            async def tidings_broadcast(marker: str) -> dict[str, float]:
                async def one(chunk: list[str]) -> None:
                    body = orjson.dumps({"to": {"user_ids": chunk}, "channels": ["in_app"],
                                         "title": marker, "body": "Your order has shipped"})
                    async with session.post(f"{base}/v1/notifications", data=body,
                                            headers=post_headers) as r:
                        raw = await r.read()
                        if r.status != 202:
                            raise RuntimeError(f"POST /v1/notifications answered {r.status}: {raw[:300]!r}")

                await asyncio.gather(*(one(users[i:i + args.batch])
                                       for i in range(0, len(users), args.batch)))
                return {}

            servers: list[Server] = [Server(
                "tidings", "Tidings", tidings.pid, port,
                [f"/v1/users/me/stream?token={t}" for t in tokens], True, tidings_broadcast)]
            console.print(f"tidings pid {tidings.pid} (uvloop loaded: {has_uvloop(tidings.pid)}), "
                          f"store {'PostgreSQL schema ' + schema if schema else 'SQLite'}"
                          f"{', hub Redis' if args.redis else ', hub in process'}")
            if others:
                bare_port = free_port()
                bare = Proc("bare", [*pin_prefix(SERVER_CORE), sys.executable,
                                     str(BENCH / "_realtime_bare.py"), "--port", str(bare_port)],
                            dict(os.environ), folder)
                procs.append(bare)
                await bare.wait_http(f"http://127.0.0.1:{bare_port}/healthz")

                async def bare_broadcast(marker: str) -> dict[str, float]:
                    return await call(session, "GET",
                                      f"http://127.0.0.1:{bare_port}/broadcast?marker={marker}", {200})

                servers.append(Server("bare", "bare websockets", bare.pid, bare_port, ["/stream"] * n,
                                      True, bare_broadcast))
                console.print(f"bare websockets pid {bare.pid} (uvloop loaded: {has_uvloop(bare.pid)})")
            if {"memory", "broadcast"} & args.only:
                why = nchan_server.missing()
                if why:
                    report.note(f"[yellow]skipped[/] nchan: {why}")
                else:
                    nchan = nchan_server.start(pin_prefix(SERVER_CORE), resource.getrlimit(
                        resource.RLIMIT_NOFILE)[1], n + 1000)
                    nchan_base = nchan.base

                    async def nchan_broadcast(marker: str) -> dict[str, float]:
                        async with session.post(f"{nchan_base}/pub",
                                                data=bare_server.frame(marker).encode(),
                                                headers={"Content-Type": "application/json"}) as r:
                            await r.read()
                            if r.status not in (201, 202):
                                raise RuntimeError(f"nchan publish answered {r.status}")
                        return {}

                    servers.append(Server("nchan", "nginx + nchan", nchan.pid, nchan.port,
                                          ["/sub"] * n, False, nchan_broadcast))
                    console.print(f"nginx + nchan pid {nchan.pid}")
            for s in servers:
                report.servers[s.key] = s
            await clients.start(args.client_procs, folder)

            if held:
                console.print(f"[bold]memory[/]: {n:,} connections per server, "
                              f"{args.client_procs} client processes")
                for s in servers:
                    if s.key == "tidings" or {"memory", "broadcast"} & args.only:
                        await connect(report, clients, s, args, session)
            if "latency" in args.only:
                console.print(f"[bold]latency[/]: {args.rate:g} notifications/s for {args.duration:g} s")
                await part_latency(report, clients, servers[0], users, session, key, args)
            if "broadcast" in args.only:
                console.print(f"[bold]broadcast[/]: one event to {n:,} connections, "
                              f"{args.rounds} rounds")
                await part_broadcast(report, clients, [s for s in servers if s.connected], args)
            if "churn" in args.only:
                console.print(f"[bold]churn[/]: {args.churn_cycles:,} cycles, "
                              f"{args.churn_concurrency} at once")
                for s in servers:
                    if s.key in ("tidings", "bare"):
                        await part_churn(report, clients, s, args, session)
            if held:
                answers = await clients.all({"op": "stats"})
                for s in servers:
                    still = sum(a["open"].get(s.key, 0) for a in answers)
                    if s.connected and still != s.connected:
                        report.note(f"[yellow]{s.name}: {s.connected - still} of {s.connected:,} "
                                    f"held connections ended by the server during the run[/]")
                for s in servers:
                    await clients.all({"op": "close", "group": s.key})
    finally:
        await clients.stop()
        if nchan is not None:
            problems = [line for line in nchan.log_tail(200).splitlines() if "[error]" in line
                        or "[crit]" in line or "[alert]" in line]
            if problems:
                report.note(f"nginx error.log: {len(problems)} lines, last: {problems[-1]}")
            nchan.stop()
        for p in reversed(procs):
            p.stop()
        for p in procs:
            problems = log_problems(p.log)
            if problems:
                report.note(f"[yellow]{p.name} log: {len(problems)} lines of warnings or errors[/]; "
                            f"first ones:\n  " + "\n  ".join(problems[:8]))
            elif p.proc.returncode not in (0, None, 130, -signal.SIGINT):
                report.note(f"[yellow]{p.name} exited with {p.proc.returncode}[/]:\n{p.tail()}")
        if schema is not None:
            from _common import drop_schema
            with contextlib.suppress(Exception):
                await drop_schema(args.postgres_url, schema)
        if args.keep:
            console.print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return report


# --- output ----------------------------------------------------------------------------------

def fmt_ms(values: Sequence[float], p: float | None = None) -> str:
    if not values:
        return "-"
    v = max(values) if p is None else percentile(values, p)
    return f"{v * 1e3:.1f}"


def summary(report: Report, args: argparse.Namespace) -> None:
    n = args.connections
    held = [s for s in report.servers.values() if s.mem_with is not None]
    if held:
        t = Table(title=f"1. memory: {n:,} idle WebSocket connections held "
                  f"(server on core {SERVER_CORE}, {args.client_procs} client processes on core "
                  f"{CLIENT_CORE})")
        for col in ("server", "held", "negotiated extensions", "connect s", "RSS before MiB",
                    "RSS with MiB", "KiB / conn", "anon KiB / conn", "open files", "target"):
            left = col in ("server", "negotiated extensions", "target")
            t.add_column(col, justify="left" if left else "right")
        for s in held:
            assert s.mem_before is not None and s.mem_with is not None
            per = (s.mem_with.rss_kib - s.mem_before.rss_kib) / max(1, s.connected)
            anon = (s.mem_with.anon_kib - s.mem_before.anon_kib) / max(1, s.connected)
            target = (f"≤ {MEMORY_TARGET_KIB:g} KiB: {verdict(per <= MEMORY_TARGET_KIB)}"
                      if s.key == "tidings" else "")
            held_text = f"{s.connected:,}" + (f" (gauge {s.gauge})" if s.gauge else "")
            if s.connect_errors:
                held_text += f" [red]errors {dict(s.connect_errors)}[/]"
            t.add_row(s.name, held_text, ", ".join(f"{k} x{v:,}" for k, v in s.extensions.items()),
                      f"{s.connect_seconds:.1f}", f"{s.mem_before.rss_kib / 1024:.1f}",
                      f"{s.mem_with.rss_kib / 1024:.1f}", f"{per:.1f}", f"{anon:.1f}",
                      f"{s.mem_before.fds:,} → {s.mem_with.fds:,}", target)
        console.print(t)
        offer = ("permessage-deflate; client_max_window_bits (as browsers do)" if args.offer_deflate
                 else "no extension")
        console.print(f"clients offered {offer}; the server decides. RSS before: after 200 "
                      "connections were opened and "
                      "closed (warm-up), the server idle.")

    lat = report.latency
    if lat:
        t = Table(title=f"2. latency: {args.rate:g} notifications/s to random connected users for "
                  f"{args.duration:g} s (POST answer read → notification.created at the user's socket)")
        for col in ("accepted", "rate /s", "received", "p50 ms", "p99 ms", "max ms",
                    "read p50/p99/max ms", "from POST sent p50/p99", "POST p50/p99 ms",
                    "server CPU", "target p99"):
            t.add_column(col, justify="right")
        k = lat["kernel"]
        ok = bool(k) and percentile(k, 99) * 1e3 <= LATENCY_TARGET_MS and not lat["missing"]
        t.add_row(f"{lat['accepted']:,}/{lat['posted']:,}", f"{lat['accepted'] / lat['seconds']:,.0f}",
                  f"{lat['received']:,}" + (f" [red]({lat['missing']} missing)[/]" if lat["missing"] else ""),
                  fmt_ms(k, 50), fmt_ms(k, 99), fmt_ms(k),
                  f"{fmt_ms(lat['read'], 50)} / {fmt_ms(lat['read'], 99)} / {fmt_ms(lat['read'])}",
                  f"{fmt_ms(lat['sent'], 50)} / {fmt_ms(lat['sent'], 99)}",
                  f"{fmt_ms(lat['post'], 50)} / {fmt_ms(lat['post'], 99)}",
                  f"{lat['server_cpu']:.0%}", f"≤ {LATENCY_TARGET_MS:g} ms: {verdict(ok)}")
        console.print(t)
        console.print("Received = the kernel's receive timestamp on the client socket (SO_TIMESTAMPNS, "
                      "CLOCK_REALTIME), compared with time.time() in the POSTing process on the same "
                      "machine; read = when the client process read it. A negative latency means the "
                      "event reached the user before the POST's answer was read. "
                      + (f"POST errors: {lat['errors']}. " if lat["errors"] else "")
                      + f"Load generator CPU: {lat['own_cpu']:.0%} of its core.")
        reached = lat["accepted"] / lat["seconds"]
        if reached < 0.95 * args.rate:
            console.print(f"[yellow]note:[/] the server answered {reached:,.0f} POSTs/s, not "
                          f"{args.rate:g}: requests waited for a connection in the load generator, "
                          "so 'from POST sent' and the POST latencies include that queue; the "
                          "latency from the answer does not.")

    if report.rounds:
        broadcast_summary(report, args)

    if report.churn:
        t = Table(title=f"4. churn: {args.churn_cycles:,} connect → first message → close cycles, "
                  f"{args.churn_concurrency} at once")
        for col in ("server", "cycles ok", "cycles/s", "server CPU", "RSS before → after MiB",
                    "anon before → after MiB", "open files", "gauge", "errors"):
            t.add_column(col, justify="left" if col in ("server", "errors") else "right")
        for key, c in report.churn.items():
            b, a = c["before"], c["after"]
            t.add_row(report.servers[key].name, f"{c['ok']:,}", f"{c['ok'] / c['seconds']:,.0f}",
                      f"{c['server_cpu']:.0%}", f"{b.rss_kib / 1024:.1f} → {a.rss_kib / 1024:.1f}",
                      f"{b.anon_kib / 1024:.1f} → {a.anon_kib / 1024:.1f}", f"{b.fds:,} → {a.fds:,}",
                      " → ".join(c["gauge"]) if c["gauge"][0] else "-",
                      ", ".join(f"{k}: {v}" for k, v in c["errors"].items()) or "0")
        console.print(t)
    for line in report.notes:
        console.print(line)


def broadcast_summary(report: Report, args: argparse.Namespace) -> None:
    n, size = args.connections, args.batch
    posts = math.ceil(n / size)
    t = Table(title=f"3. one event to {n:,} connections: deliveries/s, medians of {args.rounds} rounds")
    for col in ("server", "trigger→last /s", "first→last /s", "trigger→last s", "first→last s",
                "answered s", "server CPU s", "per round (trigger→last /s)", "missing"):
        t.add_column(col, justify="left" if col == "server" else "right")
    ends: dict[str, tuple[float, float]] = {}
    for key, rounds in report.rounds.items():
        e2e = median([r.rate(True) for r in rounds])
        whole = median([r.rate(False) for r in rounds])
        ends[key] = (e2e, whole)
        t.add_row(report.servers[key].name, f"{e2e:,.0f}", f"{whole:,.0f}",
                  f"{median([r.last - r.trigger for r in rounds]):.3f}",
                  f"{median([r.last - r.first for r in rounds]):.3f}",
                  f"{median([r.answered for r in rounds]):.3f}",
                  f"{median([r.server_cpu for r in rounds]):.2f}",
                  ", ".join(f"{r.rate(True):,.0f}" for r in rounds),
                  str(sum(r.missing for r in rounds)))
    console.print(t)

    t = Table(title=f"3b. fan-out per group of {size:,} users ({posts} groups x {args.rounds} rounds; "
              "Tidings: the recipients of one POST; the baselines: the same connections)")
    for col in ("server", "groups", "own /s", "span p10 ms", "span p50 ms", "span p90 ms",
                "all in span /s", "interleave", "per round (own /s)"):
        t.add_column(col, justify="left" if col == "server" else "right")
    fans: dict[str, tuple[float, float, float]] = {}
    for key, rounds in report.rounds.items():
        timed = [b for r in rounds for b in r.batches if not math.isnan(b.rate())]
        spans = [b.span for b in timed]
        fans[key] = (median([b.rate() for b in timed]), median([b.busy_rate() for b in timed]),
                     median([b.interleave for b in timed]))
        t.add_row(report.servers[key].name, f"{len(timed):,}", f"{fans[key][0]:,.0f}",
                  fmt_ms(spans, 10), fmt_ms(spans, 50), fmt_ms(spans, 90), f"{fans[key][1]:,.0f}",
                  f"{fans[key][2]:.2f}",
                  ", ".join(f"{median([b.rate() for b in r.batches]):,.0f}" for r in rounds))
    console.print(t)

    if "tidings" in ends:
        for other, goal in (("bare", BARE_TARGET), ("nchan", NCHAN_TARGET)):
            if other not in ends:
                continue
            own = ratio(fans["tidings"][0], fans[other][0])
            busy = ratio(fans["tidings"][1], fans[other][1])
            e2e = ratio(ends["tidings"][0], ends[other][0])
            whole = ratio(ends["tidings"][1], ends[other][1])
            spread = max(fans["tidings"][2], fans[other][2])
            own_verdict = (verdict(own >= goal) if spread <= INTERLEAVE_LIKE
                           else f"[yellow]not like for like: interleave {spread:.2f}[/]")
            console.print(
                f"Tidings / {report.servers[other].name} (target ≥ {goal}): fan-out per group: all "
                f"in span [bold]{busy:.2f}[/] ({verdict(busy >= goal)}), own [bold]{own:.2f}[/] "
                f"({own_verdict}); end-to-end, includes writing {n:,} inbox rows: trigger→last "
                f"[bold]{e2e:.2f}[/] ({verdict(e2e >= goal)}), first→last [bold]{whole:.2f}[/] "
                f"({verdict(whole >= goal)})")
    console.print(
        f"trigger: Tidings' first POST sent ({posts} concurrent POSTs of {size:,} user_ids), the "
        "bare server's GET /broadcast, nchan's POST /pub. Times are kernel receive timestamps at "
        "the clients. answered: until the trigger's HTTP answer(s) were read. server CPU: from "
        f"trigger to the last delivery. 3b, per group i of connections (users i*{size} .. "
        f"i*{size}+{size - 1}, addressed by Tidings' POST i): span = its last - first receive; "
        "own /s = the group's "
        "receipts / span; all in span /s = receipts on any connection within that span / span; "
        "interleave = all / own receipts in the span (1: the group was written alone). Medians over "
        "groups and rounds. A baseline writes one event to all connections in an order of its own, "
        "so its groups interleave and their own /s counts only a share of its writes.")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=10_000, help="WebSocket connections per server")
    p.add_argument("--rounds", type=int, default=5, help="broadcast rounds per server (medians)")
    p.add_argument("--only", default=",".join(PARTS),
                   help=f"comma-separated parts among {', '.join(PARTS)} (default: all)")
    p.add_argument("--postgres", action="store_true", help="Tidings on PostgreSQL (a schema of its own)")
    p.add_argument("--postgres-url", default=POSTGRES_URL)
    p.add_argument("--redis", action="store_true", help="Tidings' hub on Redis (TIDINGS_REDIS_URL)")
    p.add_argument("--redis-url", default=os.environ.get("TIDINGS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--batch", type=int, default=MAX_USER_IDS,
                   help=f"broadcast: user_ids per POST for Tidings, and the size of the groups of "
                        f"connections whose fan-out is timed on every server (1..{MAX_USER_IDS})")
    p.add_argument("--rate", type=float, default=1000.0, help="latency: notifications per second")
    p.add_argument("--duration", type=float, default=10.0, help="latency: seconds of load")
    p.add_argument("--churn-cycles", type=int, default=100_000)
    p.add_argument("--churn-concurrency", type=int, default=200)
    p.add_argument("--client-procs", type=int, default=3,
                   help="client processes sharing the connections (all on the client core)")
    p.add_argument("--connect-concurrency", type=int, default=200,
                   help="connects in flight per client process")
    p.add_argument("--http-connections", type=int, default=64,
                   help="keep-alive connections of the HTTP load")
    p.add_argument("--no-offer-deflate", dest="offer_deflate", action="store_false",
                   help="clients offer no permessage-deflate (by default they offer it, as browsers do)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (database, logs)")
    args = p.parse_args()
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only - set(PARTS)
    if unknown:
        p.error(f"unknown part(s) {sorted(unknown)}; choose among {', '.join(PARTS)}")
    if args.connections < 1 or args.rounds < 1 or args.client_procs < 1:
        p.error("--connections, --rounds and --client-procs must be positive")
    if not 1 <= args.batch <= MAX_USER_IDS:
        p.error(f"--batch must be between 1 and {MAX_USER_IDS} (the API's limit per request)")
    return args


def raise_open_files() -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return f"open files limit {hard:,} (soft was {soft:,})"


def main() -> None:
    args = parse()
    limit = raise_open_files()
    pinned = "not pinned"
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {CLIENT_CORE})
        pinned = f"pinned to core {CLIENT_CORE}"
    console.print(f"[bold]bench/realtime.py[/]: {args.connections:,} connections, parts "
                  f"{', '.join(p for p in PARTS if p in args.only)}; this process {pinned}, "
                  f"servers on core {SERVER_CORE}; {limit}; Python {sys.version.split()[0]}")
    check_quiet()
    # The load generator runs on the plain asyncio loop (as bench/api.py, for the same reason);
    # the client processes run on uvloop.
    report = asyncio.run(run(args))
    summary(report, args)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
