"""Loopback doubles for bench/fanout.py: an FCM v1 endpoint (HTTP/1.1 keep-alive, with a token
endpoint) and an APNs endpoint (HTTP/2 over TLS), each answering a canned success as fast as the
machine allows, in processes of their own pinned to one core.

nginx is used when it is installed: it answers far faster than any Python server, so it is never
what limits a client. Without it, the same answers come from Python: a raw `asyncio.Protocol`
HTTP/1.1 server (several processes sharing the port with SO_REUSEPORT) and an `h2` server. This
file is also the entry point of those Python servers:

    python bench/_fanout_doubles.py fcm --port P
    python bench/_fanout_doubles.py apns --port P --cert cert.pem --key key.pem

Also here: the throwaway credentials the clients need (an RSA service account, an EC P-256 APNs
key, a CA and a server certificate for 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _procs import cpu_seconds, free_port, pin_prefix

FCM_NAME = b'{"name": "projects/p/messages/1"}'
TOKEN_BODY = b'{"access_token": "x", "expires_in": 3600, "token_type": "Bearer"}'
ACCESS_TOKEN = "x"
_UNAUTH_BODY = b'{"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "bad token"}}'
PROJECT = "p"

# --- credentials ---------------------------------------------------------------------------


def service_account(token_uri: str, project_id: str = PROJECT) -> dict[str, Any]:
    """A service-account JSON with a fresh RSA key, its token endpoint at `token_uri`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": project_id,
            "private_key_id": secrets.token_hex(20), "private_key": pem,
            "client_email": f"bench@{project_id}.iam.gserviceaccount.com",
            "client_id": "1234567890", "token_uri": token_uri,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth"}


def ec_p256_pem() -> str:
    """An APNs signing key (.p8 shape: PKCS#8 PEM of an EC P-256 key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@dataclass
class Tls:
    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.set_alpn_protocols(["h2"])
        return ctx


def make_tls(folder: Path) -> Tls:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost, signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fanout bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    tls = Tls(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    tls.ca.write_bytes(ca.public_bytes(pem))
    tls.cert.write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    tls.key.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return tls


# --- processes -----------------------------------------------------------------------------


def wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the double exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def descendants(pid: int) -> list[int]:
    """The process and all its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


@dataclass
class Double:
    """A running double: where it listens, its processes, and how to stop them."""

    kind: str  # "fcm" | "apns"
    engine: str  # "nginx" | "python"
    port: int
    proc: subprocess.Popen[bytes]
    folder: Path
    core: int | None
    processes: int = 1
    tls: Tls | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        scheme = "https" if self.kind == "apns" else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def refresh_pids(self) -> None:
        self.pids = descendants(self.proc.pid)

    def cpu(self) -> float:
        return cpu_seconds(*self.pids)

    def describe(self) -> str:
        where = f"pinned to core {self.core}" if self.core is not None else "not pinned"
        if self.engine == "nginx":
            what = "nginx, 1 worker" + (", HTTP/2 + TLS" if self.kind == "apns" else ", HTTP/1.1")
        else:
            what = (f"Python asyncio HTTP/1.1, {self.processes} process(es) with SO_REUSEPORT"
                    if self.kind == "fcm" else "Python h2 + TLS, 1 process")
        return f"{self.kind} double: {what}, {where}, at {self.base_url}"

    def stop(self) -> None:
        """Stop what this double started, by pid: SIGTERM (nginx: fast shutdown), then SIGKILL."""
        pids = descendants(self.proc.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in pids[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)


NGINX_FCM = """
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type application/json;
        location ~ ^/v1/projects/[^/]+/messages:send$ {{
            if ($http_authorization != "Bearer {token}") {{
                return 401 '{unauthorised}';
            }}
            return 200 '{name}';
        }}
        location = /token {{
            return 200 '{token_body}';
        }}
        location = /_status {{ stub_status; }}
    }}
"""

NGINX_APNS = """
    map $request_id $apns_id {{
        "~^(?<a>.{{8}})(?<b>.{{4}})(?<c>.{{4}})(?<d>.{{4}})(?<e>.{{12}})$" "$a-$b-$c-$d-$e";
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2 backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        http2_max_concurrent_streams 1000;
        http2_chunk_size 16k;
        default_type application/json;
        location /3/device/ {{
            add_header apns-id $apns_id always;
            return 200 '';
        }}
        location = /_status {{ stub_status; }}
    }}
"""

NGINX_MAIN = """
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
user root;
events {{ worker_connections 16384; multi_accept on; }}
worker_rlimit_nofile 32768;
http {{
    access_log off;
    server_tokens off;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    client_body_buffer_size 64k;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
{servers}
}}
"""


def start_nginx(kind: str, core: int | None, tls: Tls | None = None) -> Double:
    folder = Path(tempfile.mkdtemp(prefix=f"fanout_{kind}_nginx_"))
    port = free_port()
    if kind == "fcm":
        servers = NGINX_FCM.format(port=port, token=ACCESS_TOKEN, name=FCM_NAME.decode(),
                                   token_body=TOKEN_BODY.decode(),
                                   unauthorised=_UNAUTH_BODY.decode())
    else:
        assert tls is not None
        servers = NGINX_APNS.format(port=port, cert=tls.cert, key=tls.key)
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_MAIN.format(folder=folder, servers=servers))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([*pin_prefix(core), nginx, "-p", str(folder), "-c", str(conf),
                             "-e", str(folder / "error.log"), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    double = Double(kind, "nginx", port, proc, folder, core, tls=tls)
    try:
        wait_for_port(port, proc)
    except RuntimeError as exc:
        err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
        log = (folder / "error.log").read_text() if (folder / "error.log").exists() else ""
        double.stop()
        raise RuntimeError(f"{exc}: {err or log}".strip()) from None
    time.sleep(0.1)
    double.refresh_pids()
    return double


def start_python(kind: str, core: int | None, tls: Tls | None = None,
                 processes: int = 2) -> Double:
    folder = Path(tempfile.mkdtemp(prefix=f"fanout_{kind}_py_"))
    port = free_port()
    cmd = [*pin_prefix(core), sys.executable, str(Path(__file__).resolve()), kind,
           "--port", str(port)]
    if kind == "fcm":
        cmd += ["--processes", str(processes)]
    else:
        assert tls is not None
        cmd += ["--cert", str(tls.cert), "--key", str(tls.key)]
        processes = 1
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    double = Double(kind, "python", port, proc, folder, core, processes, tls=tls)
    try:
        wait_for_port(port, proc)
    except RuntimeError:
        double.stop()
        raise
    time.sleep(0.3)
    double.refresh_pids()
    return double


def have_nginx() -> bool:
    return bool(shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"))


def start(kind: str, engine: str, core: int | None, tls: Tls | None = None) -> Double:
    """`engine`: "nginx", "python", or "auto" (nginx when installed)."""
    if engine == "auto":
        engine = "nginx" if have_nginx() else "python"
    if engine == "nginx":
        return start_nginx(kind, core, tls)
    return start_python(kind, core, tls)


def served(double: Double) -> int | None:
    """Requests the double has answered so far (nginx's stub_status; None for the Python ones)."""
    if double.engine != "nginx":
        return None
    import http.client

    if double.kind == "fcm":
        conn = http.client.HTTPConnection("127.0.0.1", double.port, timeout=5)
    else:
        assert double.tls is not None
        ctx = ssl.create_default_context(cafile=str(double.tls.ca))
        conn = http.client.HTTPSConnection("127.0.0.1", double.port, timeout=5, context=ctx)
    try:
        conn.request("GET", "/_status")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    # "Active connections: 1 \nserver accepts handled requests\n 3 3 10 \n..."; minus this one.
    return int(text.splitlines()[2].split()[2]) - 1


# --- the Python servers (fallback when nginx is absent) -----------------------------------

_OK_FCM = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
           + str(len(FCM_NAME)).encode() + b"\r\n\r\n" + FCM_NAME)
_OK_TOKEN = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
             + str(len(TOKEN_BODY)).encode() + b"\r\n\r\n" + TOKEN_BODY)
_UNAUTH = (b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: "
           + str(len(_UNAUTH_BODY)).encode() + b"\r\n\r\n" + _UNAUTH_BODY)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Http1Fcm(asyncio.Protocol):
    """Keep-alive HTTP/1.1 with Content-Length bodies, answers built once."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        out = []
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            lines = head.split(b"\r\n")
            length = 0
            authorised = False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                lname = name.strip().lower()
                if lname == b"content-length":
                    length = int(value)
                elif lname == b"authorization":
                    authorised = value.strip() == b"Bearer " + ACCESS_TOKEN.encode()
                elif lname == b"transfer-encoding":
                    out.append(_BAD)
                    assert self.transport is not None
                    self.transport.write(b"".join(out))
                    self.transport.close()
                    return
            total = end + 4 + length
            if len(buf) < total:
                break
            path = lines[0].split(b" ", 2)[1]
            if path.endswith(b"/messages:send"):
                out.append(_OK_FCM if authorised else _UNAUTH)
            elif path == b"/token":
                out.append(_OK_TOKEN)
            else:
                out.append(_NOT_FOUND)
            buf = buf[total:]
        self.buf = buf
        if out:
            assert self.transport is not None
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])


def serve_fcm(port: int, processes: int) -> None:
    children: list[int] = []
    for _ in range(processes - 1):
        pid = os.fork()
        if pid == 0:
            children = []
            break
        children.append(pid)

    async def main() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(4096)
        server = await asyncio.get_running_loop().create_server(Http1Fcm, sock=sock)
        async with server:
            await server.serve_forever()

    _run(main())
    for pid in children:
        os.kill(pid, signal.SIGTERM)


class H2Apns(asyncio.Protocol):
    """APNs' success answer to every POST: 200 with an apns-id, after the request's last frame."""

    def __init__(self) -> None:
        import h2.config
        import h2.connection

        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        import h2.settings

        self.transport = transport  # type: ignore[assignment]
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
                                   h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        self.conn.increment_flow_control_window(1 << 24)
        transport.write(self.conn.data_to_send())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        import h2.events
        import h2.exceptions

        conn = self.conn
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            print(f"apns double: protocol error: {exc!r}", file=sys.stderr)
            assert self.transport is not None
            self.transport.write(conn.data_to_send())
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                if event.flow_controlled_length:
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                with contextlib.suppress(h2.exceptions.StreamClosedError):
                    conn.send_headers(event.stream_id, [(b":status", b"200"),
                                                        (b"apns-id", str(uuid.uuid4()).encode())],
                                      end_stream=True)
        out = conn.data_to_send()
        if out:
            assert self.transport is not None
            self.transport.write(out)


def serve_apns(port: int, cert: str, key: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            H2Apns, "127.0.0.1", port, ssl=ctx, backlog=4096)
        async with server:
            await server.serve_forever()

    _run(main())


def _run(coro: Any) -> None:
    try:
        import uvloop
        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        runner(coro)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=("fcm", "apns"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--cert")
    p.add_argument("--key")
    a = p.parse_args()
    if a.kind == "fcm":
        serve_fcm(a.port, a.processes)
    else:
        serve_apns(a.port, a.cert, a.key)
