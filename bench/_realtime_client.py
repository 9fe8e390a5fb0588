"""WebSocket clients for bench/realtime.py: one process holds thousands of connections and
answers commands from the bench, one JSON line each on stdin, one JSON line back on stdout.

    python bench/_realtime_client.py

A minimal RFC 6455 client on raw non-blocking sockets (the loop's `add_reader`, `recvmsg`),
rather than a client library, for two reasons:

- every socket asks the kernel for receive timestamps (SO_TIMESTAMPNS), so a message's arrival
  is the time the server's write reached this socket, not the time this process got round to
  reading it. Thousands of connections share one core with the load generator; with kernel
  timestamps the instrument's own speed hardly enters the figures.
- one object per connection with a few slots: the clients cost little, and offer exactly what
  the bench says (by default what a browser offers: `permessage-deflate;
  client_max_window_bits`), inflating what the server compresses when it accepts.

The client answers pings, handles fragmented and compressed messages, and closes with a close
frame (1000) and waits for the server's close before closing the socket, as a browser does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import random
import socket
import struct
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

SO_TIMESTAMPNS = 35  # Linux; Python's socket module does not name it
ANCILLARY = socket.CMSG_SPACE(16)
READ_SIZE = 262_144
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
CREATED = b'"notification.created"'

CONNECTING, OPEN, CLOSING, CLOSED = range(4)


class Group:
    """The connections opened under one name (one server), and what is being recorded on
    them: the first message of a round that carries a marker, or every created notification."""

    def __init__(self) -> None:
        self.conns: list[Ws] = []
        self.marker: bytes | None = None
        self.pending = 0
        self.all_marked = asyncio.Event()
        self.watching = False
        self.records: list[tuple[str, float, float]] = []  # (notification id, kernel ts, read ts)
        self.closes: Counter[str] = Counter()  # why connections ended without our asking

    def open_conns(self) -> list[Ws]:
        return [c for c in self.conns if c.state == OPEN]


class Ws:
    """One client connection. Its reader runs from the loop's `add_reader` callback."""

    __slots__ = ("buf", "close_code", "ext", "first_at", "frag", "frag_op", "frag_z", "group",
                 "inflater", "marked", "sock", "state", "status", "tag", "waiter", "we_closed")

    def __init__(self, group: Group | None, tag: int = -1) -> None:
        self.group = group
        self.tag = tag  # the bench's number for this connection (its user), or -1
        self.sock: socket.socket | None = None
        self.state = CONNECTING
        self.buf = bytearray()
        self.status = 0  # the HTTP status of the upgrade
        self.ext = ""  # Sec-WebSocket-Extensions of the answer
        self.inflater: Any = None
        self.frag: list[bytes] = []
        self.frag_op = 0
        self.frag_z = False
        self.first_at = math.nan  # kernel timestamp of the first message
        self.marked: tuple[float, float] | None = None
        self.close_code: int | None = None
        self.we_closed = False
        self.waiter: asyncio.Future[None] | None = None

    # -- opening and closing ---------------------------------------------------------------

    async def open(self, host: str, port: int, path: str, offer_deflate: bool,
                   headers: dict[str, str]) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock = sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            await loop.sock_connect(sock, (host, port))
        except BaseException:
            self.state = CLOSED
            sock.close()
            raise
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if offer_deflate:
            lines.append(f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        loop.add_reader(sock.fileno(), self.readable)
        try:
            await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        except OSError:
            self.lost("send failed")
            raise
        await self.until(lambda: self.state != CONNECTING)
        if self.state != OPEN:
            raise ConnectionError(f"HTTP {self.status}" if self.status else "closed during upgrade")

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def close(self, wait: float) -> None:
        """Close frame 1000, then wait for the server's close (and its end of the TCP
        connection) before closing the socket."""
        if self.state != OPEN:
            self.shut()
            return
        self.we_closed = True
        self.state = CLOSING
        self.send(0x8, struct.pack("!H", 1000))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.until(lambda: self.state == CLOSED), wait)
        self.shut()

    def shut(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        self.state = CLOSED
        self.wake()

    def lost(self, why: str) -> None:
        """The connection ended without our asking (or failed)."""
        if self.state == OPEN and self.group is not None and not self.we_closed:
            self.group.closes[why] += 1
            if self.marked is None and self.group.marker is not None:
                self.group.pending -= 1
                if self.group.pending <= 0:
                    self.group.all_marked.set()
        self.shut()

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        frame = bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.send(frame)

    # -- reading ------------------------------------------------------------------------------

    def readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            data, anc, _, _ = sock.recvmsg(READ_SIZE, ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.lost(type(exc).__name__)
            return
        read_at = time.time()
        kernel = math.nan
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
                sec, nsec = struct.unpack_from("qq", raw)
                kernel = sec + nsec / 1e9
        if not data:
            self.lost("EOF" if self.close_code is None else f"close {self.close_code}")
            return
        self.buf += data
        if self.state == CONNECTING and not self.upgrade():
            return
        self.frames(kernel, read_at)

    def upgrade(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[:end + 4]
        try:
            self.status = int(head[0].split()[1])
        except (IndexError, ValueError):
            self.status = -1
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-extensions":
                self.ext = value.strip()
        if self.status != 101:
            self.shut()
            return False
        if "permessage-deflate" in self.ext:
            self.inflater = zlib.decompressobj(-15)
        self.state = OPEN
        self.wake()
        return True

    def frames(self, kernel: float, read_at: float) -> None:
        buf = self.buf
        at = 0
        while True:
            if len(buf) - at < 2:
                break
            b0, b1 = buf[at], buf[at + 1]
            size = b1 & 0x7F
            head = 2
            if size == 126:
                if len(buf) - at < 4:
                    break
                size = int.from_bytes(buf[at + 2:at + 4], "big")
                head = 4
            elif size == 127:
                if len(buf) - at < 10:
                    break
                size = int.from_bytes(buf[at + 2:at + 10], "big")
                head = 10
            if b1 & 0x80:  # a server must not mask
                self.lost("masked frame")
                return
            if len(buf) - at < head + size:
                break
            payload = bytes(buf[at + head:at + head + size])
            at += head + size
            self.frame(b0, payload, kernel, read_at)
            if self.state == CLOSED:
                return
        if at:
            del buf[:at]

    def frame(self, b0: int, payload: bytes, kernel: float, read_at: float) -> None:
        fin, rsv1, opcode = b0 & 0x80, b0 & 0x40, b0 & 0x0F
        if opcode == 0x9:
            self.send(0xA, payload)
            return
        if opcode == 0xA:
            return
        if opcode == 0x8:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            if not self.we_closed:
                self.send(0x8, payload[:2])
                self.lost(f"close {self.close_code}")
            else:
                self.state = CLOSED
                self.shut()
            return
        if opcode in (0x1, 0x2):
            self.frag, self.frag_op, self.frag_z = [payload], opcode, bool(rsv1)
        elif opcode == 0x0:
            self.frag.append(payload)
        if not fin:
            return
        message = b"".join(self.frag)
        self.frag = []
        if self.frag_z:
            message = self.inflater.decompress(message + b"\x00\x00\xff\xff")
        self.message(message, kernel, read_at)

    def message(self, message: bytes, kernel: float, read_at: float) -> None:
        if math.isnan(self.first_at):
            self.first_at = kernel if not math.isnan(kernel) else read_at
            self.wake()
        g = self.group
        if g is None:
            return
        if g.marker is not None and self.marked is None and g.marker in message:
            self.marked = (kernel, read_at)
            g.pending -= 1
            if g.pending <= 0:
                g.all_marked.set()
        if g.watching and CREATED in message:
            with contextlib.suppress(Exception):
                g.records.append((str(orjson.loads(message)["data"]["id"]), kernel, read_at))


# --- commands ---------------------------------------------------------------------------------

class Client:
    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}

    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Open one connection per path (a `concurrency` at a time); with `wait_first`, each
        counts as open once its first message arrived. `tags` (one per path) number the
        connections, so that what each received can be told apart later."""
        group = self.groups.setdefault(cmd["group"], Group())
        host, port = cmd["host"], int(cmd["port"])
        gate = asyncio.Semaphore(int(cmd.get("concurrency", 200)))
        errors: Counter[str] = Counter()
        extensions: Counter[str] = Counter()
        timeout = float(cmd.get("timeout", 30))
        ok = 0

        async def one(path: str, tag: int) -> None:
            nonlocal ok
            ws = Ws(group, tag)
            async with gate:
                try:
                    await asyncio.wait_for(self.open_one(ws, host, port, path, cmd), timeout)
                except Exception as exc:  # noqa: BLE001 -- every failure is counted by kind
                    errors[str(exc) or type(exc).__name__] += 1
                    ws.shut()
                    return
            group.conns.append(ws)
            extensions[ws.ext or "(none)"] += 1
            ok += 1

        started = time.perf_counter()
        cpu = time.process_time()
        paths = cmd["paths"]
        tags = cmd.get("tags") or [-1] * len(paths)
        await asyncio.gather(*(one(p, t) for p, t in zip(paths, tags, strict=True)))
        return {"ok": ok, "errors": dict(errors), "extensions": dict(extensions),
                "seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}

    @staticmethod
    async def open_one(ws: Ws, host: str, port: int, path: str, cmd: dict[str, Any]) -> None:
        await ws.open(host, port, path, bool(cmd.get("offer_deflate", True)), cmd.get("headers", {}))
        if cmd.get("wait_first"):
            await ws.until(lambda: not math.isnan(ws.first_at) or ws.state == CLOSED)
            if ws.state == CLOSED:
                raise ConnectionError(f"closed before the first message ({ws.close_code})")

    def arm(self, cmd: dict[str, Any]) -> dict[str, Any]:
        g = self.groups[cmd["group"]]
        g.marker = cmd["marker"].encode()
        g.all_marked = asyncio.Event()
        conns = g.open_conns()
        for c in g.conns:
            c.marked = None
        g.pending = len(conns)
        if not conns:
            g.all_marked.set()
        return {"armed": len(conns), "cpu": time.process_time()}

    async def collect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        g = self.groups[cmd["group"]]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(g.all_marked.wait(), float(cmd.get("timeout", 60)))
        marked = [(c.marked, c.tag) for c in g.conns if c.marked is not None]
        g.marker = None
        return {"kernel": [m[0] for m, _ in marked], "read": [m[1] for m, _ in marked],
                "tags": [tag for _, tag in marked], "missing": max(0, g.pending),
                "open": len(g.open_conns()), "closes": dict(g.closes), "cpu": time.process_time()}

    def watch(self, cmd: dict[str, Any]) -> dict[str, Any]:
        g = self.groups[cmd["group"]]
        if cmd["on"]:
            g.records = []
            g.watching = True
            return {"watching": len(g.open_conns())}
        g.watching = False
        records, g.records = g.records, []
        return {"records": records, "open": len(g.open_conns()), "closes": dict(g.closes)}

    async def close(self, cmd: dict[str, Any]) -> dict[str, Any]:
        g = self.groups.pop(cmd["group"], None)
        if g is None:
            return {"closed": 0}
        gate = asyncio.Semaphore(int(cmd.get("concurrency", 500)))

        async def one(c: Ws) -> None:
            async with gate:
                await c.close(float(cmd.get("timeout", 5)))

        started = time.perf_counter()
        await asyncio.gather(*(one(c) for c in g.conns))
        return {"closed": len(g.conns), "seconds": time.perf_counter() - started,
                "closes": dict(g.closes)}

    async def churn(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """`cycles` times: connect, wait for the first message, close; `concurrency` at once."""
        host, port, paths = cmd["host"], int(cmd["port"]), cmd["paths"]
        left = int(cmd["cycles"])
        errors: Counter[str] = Counter()
        ok = 0
        timeout = float(cmd.get("timeout", 30))

        async def lane() -> None:
            nonlocal left, ok
            while left > 0:
                left -= 1
                ws = Ws(None)
                try:
                    await asyncio.wait_for(self.open_one(ws, host, port, random.choice(paths),
                                                         {**cmd, "wait_first": True}), timeout)
                    await ws.close(timeout)
                    if ws.close_code not in (1000, None):
                        errors[f"closed {ws.close_code}"] += 1
                    else:
                        ok += 1
                except Exception as exc:  # noqa: BLE001 -- every failure is counted by kind
                    errors[str(exc) or type(exc).__name__] += 1
                finally:
                    ws.shut()

        started = time.perf_counter()
        cpu = time.process_time()
        await asyncio.gather(*(lane() for _ in range(int(cmd["concurrency"]))))
        return {"ok": ok, "errors": dict(errors), "seconds": time.perf_counter() - started,
                "cpu": time.process_time() - cpu}

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        if op == "connect":
            return await self.connect(cmd)
        if op == "arm":
            return self.arm(cmd)
        if op == "collect":
            return await self.collect(cmd)
        if op == "watch":
            return self.watch(cmd)
        if op == "close":
            return await self.close(cmd)
        if op == "churn":
            return await self.churn(cmd)
        if op == "stats":
            return {"cpu": time.process_time(),
                    "open": {k: len(g.open_conns()) for k, g in self.groups.items()}}
        raise ValueError(f"unknown op {op!r}")


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    client = Client()
    out = sys.stdout.buffer
    while line := await reader.readline():
        cmd = orjson.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            answer = await client.handle(cmd)
        except Exception as exc:  # noqa: BLE001 -- the bench prints it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(orjson.dumps(answer) + b"\n")
        out.flush()
    for name in list(client.groups):
        await client.close({"group": name, "timeout": 2})


def main() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


if __name__ == "__main__":
    main()
