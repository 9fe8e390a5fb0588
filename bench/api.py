"""Sends per second (and the inbox's first page) through the real HTTP server, against a bare
FastAPI app on the same server stack, measured in the same run under the same load.

    .venv/bin/python bench/api.py [--connections 64] [--duration 10] [--rounds 3]

One `tidings serve` process (SQLite file in a temporary folder, worker in the same process, the
log provider silenced by TIDINGS_LOG_LEVEL=WARNING, no rate limit) and one bare app
(bench/bare_app.py under `python -m uvicorn`) are started as subprocesses, pinned to core 0 with
taskset where it exists; this load generator (aiohttp, keep-alive, a fixed number of
connections) pins itself to core 1. Each round loads each server in turn for the same time, and
waits for the tidings server to go idle first (its worker delivers the previous sends in the
background). Nothing asserts a timing: the figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from _common import ADMIN_KEY, SECRET_KEY, check_quiet, console, median, ms, percentile, ratio, verdict
from _procs import cpu_seconds, free_port
from rich.progress import Progress
from rich.table import Table

BENCH = Path(__file__).resolve().parent
SEND_TARGET = 0.35
INBOX_TARGET = 0.5


def has_uvloop(pid: int) -> bool:
    try:
        return "uvloop" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


class Server:
    """One server subprocess that this script started, and stops by its pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.port = free_port()
        self.argv = [*argv, "--host", "127.0.0.1", "--port", str(self.port)]
        self.env = env
        self.cwd = cwd
        self.log = cwd / f"{name.replace(' ', '_')}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out,
                                         stderr=subprocess.STDOUT)

    async def wait_ready(self, session: aiohttp.ClientSession, within: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                async with session.get(self.base + "/healthz",
                                       timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer /healthz within {within:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@dataclass
class Run:
    label: str
    ok: int
    elapsed: float
    latencies: list[float]
    errors: Counter[str]
    client_cpu: float  # share of one core used by this load generator
    server_cpu: float  # share of one core used by the server process

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0


@dataclass
class Target:
    """One endpoint of one server under load."""

    label: str
    server: Server
    method: str
    path: str
    body: bytes | None
    expect: int
    runs: list[Run] = field(default_factory=list)


async def drive(session: aiohttp.ClientSession, t: Target, connections: int, duration: float,
                max_requests: int, progress: Progress | None = None,
                task: object = None) -> tuple[list[float], Counter[str], int, float]:
    """`connections` workers send back to back until `duration` seconds or `max_requests`."""
    url = t.server.base + t.path
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    issued = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal issued
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            start = time.perf_counter()
            try:
                async with session.request(t.method, url, data=t.body) as r:
                    await r.read()
                    status = r.status
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                errors[type(exc).__name__] += 1
                continue
            if status == t.expect:
                latencies.append(time.perf_counter() - start)
            else:
                errors[f"HTTP {status}"] += 1

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.25)
            if progress is not None:
                progress.update(task, completed=min(duration, duration - (deadline - time.perf_counter())))

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(connections)))
    finally:
        ticker.cancel()
    return latencies, errors, issued, time.perf_counter() - started


async def measure(session: aiohttp.ClientSession, t: Target, args: argparse.Namespace,
                  progress: Progress) -> Run:
    task = progress.add_task(f"{t.label}: warm-up", total=args.warmup)
    await drive(session, t, args.connections, args.warmup, args.requests, progress, task)
    progress.remove_task(task)
    task = progress.add_task(t.label, total=args.duration)
    cpu_client, cpu_server = time.process_time(), cpu_seconds(t.server.pid)
    latencies, errors, _, elapsed = await drive(session, t, args.connections, args.duration,
                                                args.requests, progress, task)
    run = Run(t.label, len(latencies), elapsed, latencies, errors,
              (time.process_time() - cpu_client) / elapsed,
              (cpu_seconds(t.server.pid) - cpu_server) / elapsed)
    progress.remove_task(task)
    t.runs.append(run)
    return run


async def settle(pid: int, idle_below: float = 0.05, window: float = 0.5,
                 at_most: float = 180.0) -> float:
    """Wait until the process uses less than `idle_below` of a core; returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < at_most:
        before = cpu_seconds(pid)
        await asyncio.sleep(window)
        if (cpu_seconds(pid) - before) / window < idle_below:
            break
    return time.monotonic() - started


async def call(session: aiohttp.ClientSession, method: str, url: str, expect: set[int],
               headers: dict[str, str] | None = None, json: object = None,
               data: bytes | None = None) -> dict:  # type: ignore[type-arg]
    async with session.request(method, url, headers=headers, json=json, data=data) as r:
        body = await r.read()
        if r.status not in expect:
            raise RuntimeError(f"{method} {url} answered {r.status}: {body[:500]!r}")
        return orjson.loads(body) if body else {}


def summary_row(t: Target) -> list[str]:
    lat = [x for r in t.runs for x in r.latencies]
    errors = sum((r.errors for r in t.runs), Counter())
    return [t.label, f"{median([r.rps for r in t.runs]):,.0f}",
            ", ".join(f"{r.rps:,.0f}" for r in t.runs), ms(percentile(lat, 50)),
            ms(percentile(lat, 99)), f"{median([r.server_cpu for r in t.runs]):.0%}",
            f"{median([r.client_cpu for r in t.runs]):.0%}",
            ", ".join(f"{k}: {v}" for k, v in errors.items()) or "0"]


async def main(args: argparse.Namespace) -> int:
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else []
    if pin:
        os.sched_setaffinity(0, {1})
    folder = Path(tempfile.mkdtemp(prefix="tidings_bench_api_"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    tidings_env = {
        **base_env,
        "TIDINGS_DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'tidings.db'}",
        "TIDINGS_ADMIN_KEY": ADMIN_KEY, "TIDINGS_SECRET_KEY": SECRET_KEY,
        "TIDINGS_LOG_LEVEL": "WARNING", "TIDINGS_RATE_LIMIT_PER_SECOND": "0",
    }
    page_file = folder / "inbox_page.json"
    bare_env = {**base_env, "BENCH_INBOX_PAGE": str(page_file)}
    uvicorn_argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(BENCH), "bare_app:app",
                    "--log-level", "warning", "--no-access-log", "--no-server-header",
                    "--proxy-headers"]
    tidings = Server("tidings", [*pin, sys.executable, "-m", "tidings", "serve"], tidings_env, folder)
    bare = Server("bare", [*pin, *uvicorn_argv], bare_env, folder)
    servers = [tidings, bare]
    bare_asyncio = None
    if args.asyncio_baseline:
        bare_asyncio = Server("bare asyncio", [*pin, *uvicorn_argv, "--loop", "asyncio"],
                              bare_env, folder)
        servers.append(bare_asyncio)

    console.print(f"[bold]bench/api.py[/]: {args.connections} connections, {args.rounds} round(s) "
                  f"of {args.warmup:g} s warm-up + {args.duration:g} s per target"
                  f"{f', at most {args.requests} requests' if args.requests < 10**12 else ''}; "
                  f"servers {'pinned to core 0, load generator to core 1' if pin else 'not pinned'}")
    check_quiet()
    connector = aiohttp.TCPConnector(limit=args.connections, limit_per_host=args.connections)
    try:
        tidings.start()
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=60)) as session:
            await tidings.wait_ready(session)
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            await call(session, "PUT", tidings.base + "/v1/apps/bench", {200, 201}, admin,
                       {"name": "Bench"})
            key = (await call(session, "POST", tidings.base + "/v1/apps/bench/keys", {201},
                              admin))["key"]
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            for user in ("u1", "u2"):
                for n in (1, 2):
                    await call(session, "POST", f"{tidings.base}/v1/users/{user}/devices",
                               {200, 201}, headers,
                               {"platform": "android", "token": f"bench-token-{user}-{n}"})

            def send_body(user: str) -> bytes:
                return orjson.dumps({"to": {"user_id": user}, "channels": ["push", "in_app"],
                                     "title": "Your order has shipped", "body": "Arriving Tuesday"})

            # Both users get an inbox of more than one page before anything is measured; u2's
            # stays that small (u1's grows with every send measured).
            for user in ("u1", "u2"):
                for _ in range(args.small_inbox):
                    await call(session, "POST", tidings.base + "/v1/notifications", {202},
                               headers, data=send_body(user))
            await settle(tidings.pid)
            page = await call(session, "GET", tidings.base + "/v1/users/u1/notifications?limit=50",
                              {200}, headers)
            page_file.write_bytes(orjson.dumps(page))
            for s in servers[1:]:
                s.start()
            for s in servers[1:]:
                await s.wait_ready(session)
            console.print(f"tidings pid {tidings.pid} (uvloop loaded: {has_uvloop(tidings.pid)}), "
                          + ", ".join(f"{s.name} pid {s.pid} (uvloop loaded: {has_uvloop(s.pid)})"
                                      for s in servers[1:])
                          + f"; inbox page {len(orjson.dumps(page)):,} bytes, "
                          f"{len(page['items'])} items")

            session.headers.update(headers)
            inbox_path = "/v1/users/u1/notifications?limit=50"
            send_targets = [Target("bare send", bare, "POST", "/v1/notifications", send_body("u1"), 202),
                            Target("tidings send", tidings, "POST", "/v1/notifications",
                                   send_body("u1"), 202)]
            inbox_targets = [Target("bare inbox", bare, "GET", inbox_path, None, 200),
                             Target("tidings inbox u1", tidings, "GET", inbox_path, None, 200)]
            extra = [Target(f"tidings inbox u2 ({args.small_inbox} notifications)", tidings, "GET",
                            "/v1/users/u2/notifications?limit=50", None, 200)]
            if bare_asyncio is not None:
                send_targets.insert(1, Target("bare send (asyncio loop)", bare_asyncio, "POST",
                                              "/v1/notifications", send_body("u1"), 202))
                inbox_targets.insert(1, Target("bare inbox (asyncio loop)", bare_asyncio, "GET",
                                               inbox_path, None, 200))
            drains: list[float] = []
            unread: list[int] = []
            with Progress(console=console, transient=True) as progress:
                for round_no in range(args.rounds):
                    for group in (send_targets, inbox_targets):
                        order = group if round_no % 2 == 0 else list(reversed(group))
                        for t in order:
                            waited = await settle(tidings.pid)
                            if t is order[0] and group is inbox_targets:
                                drains.append(waited)
                                doc = await call(session, "GET", tidings.base + inbox_path, {200})
                                unread.append(int(doc["unread_count"]))
                            await measure(session, t, args, progress)
                    for t in extra:
                        await settle(tidings.pid)
                        await measure(session, t, args, progress)
                    console.print(f"round {round_no + 1}/{args.rounds}: " + ", ".join(
                        f"{t.label} {t.runs[-1].rps:,.0f}/s"
                        for t in (*send_targets, *inbox_targets, *extra)))
    finally:
        for s in reversed(servers):
            s.stop()
        # SIGINT is how they are stopped: exit status 130 (typer) or -2 is the normal end.
        failed = [s for s in servers if s.proc is not None
                  and s.proc.returncode not in (0, None, 130, -signal.SIGINT)]
        for s in failed:
            console.print(f"[yellow]{s.name} exited with {s.proc.returncode}[/]; its log:\n{s.tail()}")  # type: ignore[union-attr]
        if args.keep:
            console.print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    table = Table(title=f"HTTP, {args.connections} connections, medians of {args.rounds} round(s)")
    for col in ("target", "req/s", "req/s per round", "p50 ms", "p99 ms", "server CPU",
                "client CPU", "errors"):
        table.add_column(col, justify="left" if col in ("target", "errors") else "right")
    for t in (*send_targets, *inbox_targets, *extra):
        table.add_row(*summary_row(t))
    console.print(table)
    send_ratio = ratio(median([r.rps for r in send_targets[-1].runs]),
                       median([r.rps for r in send_targets[0].runs]))
    inbox_ratio = ratio(median([r.rps for r in inbox_targets[-1].runs]),
                        median([r.rps for r in inbox_targets[0].runs]))
    console.print(f"send  ratio tidings/bare = [bold]{send_ratio:.3f}[/] "
                  f"(target ≥ {SEND_TARGET}: {verdict(send_ratio >= SEND_TARGET)})")
    console.print(f"inbox ratio tidings/bare = [bold]{inbox_ratio:.3f}[/] "
                  f"(target ≥ {INBOX_TARGET}: {verdict(inbox_ratio >= INBOX_TARGET)}); "
                  f"u1's unread count when its inbox was measured: {', '.join(map(str, unread))}")
    if bare_asyncio is not None:
        def rps(t: Target) -> float:
            return median([r.rps for r in t.runs])

        console.print(f"bare app on the asyncio loop / on uvloop: send "
                      f"{ratio(rps(send_targets[1]), rps(send_targets[0])):.3f}, inbox "
                      f"{ratio(rps(inbox_targets[1]), rps(inbox_targets[0])):.3f}")
    console.print("seconds the tidings worker needed to go idle after each send phase: "
                  + ", ".join(f"{d:.1f}" for d in drains))
    if any(r.client_cpu > 0.9 for t in (*send_targets, *inbox_targets) for r in t.runs):
        console.print("[yellow]note:[/] the load generator used > 90 % of its core in some runs: "
                      "the figure of the faster server is then a lower bound, and its ratio an "
                      "upper bound.")
    return 0


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=64, help="concurrent keep-alive connections")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per target and round")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each measurement")
    p.add_argument("--requests", type=int, default=10**12,
                   help="stop a measurement after this many requests (default: no limit)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the figures are medians over them")
    p.add_argument("--small-inbox", type=int, default=60,
                   help="notifications sent to u1 and u2 before measuring (u2's inbox stays this size)")
    p.add_argument("--asyncio-baseline", action="store_true",
                   help="also run the bare app on the plain asyncio loop (as `tidings serve` runs)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (database, logs)")
    args = p.parse_args()
    if args.small_inbox < 51:
        p.error("--small-inbox must be at least 51 (more than one page)")
    if args.rounds < 1 or args.duration <= 0 or args.connections < 1:
        p.error("--rounds, --duration and --connections must be positive")
    return args


if __name__ == "__main__":
    arguments = parse()
    # The load generator runs on the plain asyncio loop: aiohttp's client on uvloop showed
    # bimodal POST throughput here (half the rate with both processes half idle, from run to run).
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main(arguments)))
