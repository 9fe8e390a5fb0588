"""Memory per idle WebSocket connection: uvicorn's `websockets-sansio` protocol, Tidings' lean
protocol (`tidings.entrypoints.stream.wsprotocol`) and the `websockets` library's own server.

    python bench/ws_memory.py                     # 10,000 connections, each server in turn
    python bench/ws_memory.py --n 2000 --hold 0 --impl lean,sansio
    python bench/ws_memory.py --loop asyncio

Each server runs in a process of its own pinned to core 0 (`taskset`), with the same handler:
accept, then await `receive()` until the disconnect (a raw ASGI app for the two uvicorn
protocols; `async for message in websocket` for the library's server). No compression on the
server (clients offer permessage-deflate, as browsers do), keepalive pings every
`--ping-interval` seconds, `gc.freeze()` before serving as `tidings serve` does, uvloop unless
`--loop asyncio`. A client process pinned to core 1 opens `--n` connections (`websockets`
client) and holds them. Printed for each server: RSS (VmRSS) and anonymous RSS before the
connections (after a warm-up of `--warmup` connections opened and closed), once all are open and
the RSS has settled, and after `--hold` seconds idle (so keepalive pings have gone out), with
the growth per connection in KiB, and how many connections the client still had open.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _procs import free_port

IMPLS = ("sansio", "lean", "websockets")
LABELS = {"sansio": "uvicorn websockets-sansio", "lean": "tidings WebSocketProtocol",
          "websockets": "websockets library server"}


def pin(core: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(core)]
    return []


def run_loop(main: Any, loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)
    else:
        asyncio.run(main)


# Server process


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def serve(impl: str, port: int, ping_interval: float) -> None:
    if impl == "websockets":
        from websockets.asyncio.server import ServerConnection
        from websockets.asyncio.server import serve as ws_serve
        from websockets.exceptions import ConnectionClosed

        async def handler(websocket: ServerConnection) -> None:
            with contextlib.suppress(ConnectionClosed):
                async for _ in websocket:
                    pass

        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        async with ws_serve(handler, "127.0.0.1", port, compression=None, backlog=4096,
                            ping_interval=ping_interval or None, ping_timeout=ping_interval or None):
            gc.freeze()
            await stop.wait()
        return

    import uvicorn

    from tidings.entrypoints.stream.wsprotocol import WebSocketProtocol

    ws: Any = WebSocketProtocol if impl == "lean" else "websockets-sansio"
    config = uvicorn.Config(asgi_app, host="127.0.0.1", port=port, ws=ws,
                            ws_per_message_deflate=False, ws_ping_interval=ping_interval,
                            ws_ping_timeout=ping_interval, lifespan="off", log_level="warning",
                            access_log=False, backlog=4096)
    gc.freeze()
    await uvicorn.Server(config).serve()  # its own signal handlers stop it


# Client process


async def hold(port: int, n: int, concurrency: int) -> None:
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.protocol import State

    conns: list[ClientConnection] = []
    failures: list[str] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            try:
                conns.append(await connect(f"ws://127.0.0.1:{port}/stream", open_timeout=120,
                                           ping_interval=None, close_timeout=1))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failures.append(type(exc).__name__)

    await asyncio.gather(*(one() for _ in range(n)))
    print(f"held {len(conns)} failed {len(failures)} {sorted(set(failures))}", flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).strip():
        if line == b"report":
            print(f"open {sum(c.state is State.OPEN for c in conns)}", flush=True)
        else:
            break
    os._exit(0)  # no closing handshakes: the server sees the sockets go


# Orchestration


def rss(pid: int) -> tuple[int, int]:
    """VmRSS and RssAnon of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["RssAnon"]


def settled_rss(pid: int, limit: float = 15.0) -> tuple[int, int]:
    """The RSS once it stops moving by more than 256 KiB over a second (or after `limit`)."""
    deadline = time.monotonic() + limit
    last = rss(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = rss(pid)
        if abs(now[0] - last[0]) < 256:
            return now
        last = now
    return last


def wait_port(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise SystemExit("server did not listen within 30 s")


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_client(args: argparse.Namespace, port: int, n: int) -> tuple[subprocess.Popen[str], str]:
    client = subprocess.Popen(
        [*pin(1), sys.executable, __file__, "--client", "--port", str(port), "--n", str(n),
         "--loop", args.loop], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    return client, client.stdout.readline().strip()


def client_open(client: subprocess.Popen[str]) -> str:
    assert client.stdin is not None and client.stdout is not None
    client.stdin.write("report\n")
    client.stdin.flush()
    return client.stdout.readline().strip().removeprefix("open ")


def quit_client(client: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError):
        assert client.stdin is not None
        client.stdin.write("quit\n")
        client.stdin.flush()
    stop(client, signal.SIGTERM)


def measure(args: argparse.Namespace, impl: str) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(
        [*pin(0), sys.executable, __file__, "--serve", impl, "--port", str(port),
         "--loop", args.loop, "--ping-interval", str(args.ping_interval)], text=True)
    client: subprocess.Popen[str] | None = None
    try:
        wait_port(port, server)
        if args.warmup:
            client, _ = start_client(args, port, args.warmup)
            quit_client(client)
        time.sleep(1.0)
        base = settled_rss(server.pid)
        started = time.monotonic()
        client, held = start_client(args, port, args.n)
        connect_s = time.monotonic() - started
        connected = settled_rss(server.pid)
        open_connected = client_open(client)
        time.sleep(args.hold)
        after_hold = rss(server.pid)
        open_held = client_open(client)
        return {"base": base, "connected": connected, "held": after_hold, "client": held,
                "open": (open_connected, open_held), "connect_s": connect_s}
    finally:
        if client is not None:
            quit_client(client)
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="connections to hold")
    parser.add_argument("--impl", default=",".join(IMPLS), help=f"comma-separated, of {IMPLS}")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--hold", type=float, default=25.0, help="seconds idle after connecting")
    parser.add_argument("--ping-interval", type=float, default=20.0, help="0: no keepalive pings")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--serve", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        run_loop(serve(args.serve, args.port, args.ping_interval), args.loop)
        return
    if args.client:
        run_loop(hold(args.port, args.n, args.concurrency), args.loop)
        return

    print(f"{args.n} idle connections, server on core 0, client on core 1, loop {args.loop}, "
          f"pings every {args.ping_interval:g} s, hold {args.hold:g} s")
    results = {}
    for impl in args.impl.split(","):
        result = results[impl] = measure(args, impl)
        base, connected, held = result["base"], result["connected"], result["held"]
        per = (connected[0] - base[0]) / args.n
        per_held = (held[0] - base[0]) / args.n
        per_anon = (held[1] - base[1]) / args.n
        print(f"\n{LABELS[impl]}: client {result['client']}, connected in {result['connect_s']:.1f} s, "
              f"open after connecting/holding {result['open'][0]}/{result['open'][1]}")
        print(f"  RSS before {base[0] / 1024:.1f} MiB, connected {connected[0] / 1024:.1f} MiB, "
              f"after hold {held[0] / 1024:.1f} MiB (anon {base[1] / 1024:.1f} -> {held[1] / 1024:.1f})")
        print(f"  per connection: {per:.2f} KiB connected, {per_held:.2f} KiB after hold "
              f"({per_anon:.2f} KiB anon)")
    print("\nKiB per connection (RSS growth / n, after hold):")
    for impl, result in results.items():
        print(f"  {LABELS[impl]:<28} {(result['held'][0] - result['base'][0]) / args.n:6.2f}")


if __name__ == "__main__":
    main()
