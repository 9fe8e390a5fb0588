"""nginx with the nchan module for bench/realtime.py: a pub/sub server written in C, the
reference point for "how fast can one core fan a message out to WebSocket subscribers".

Debian ships it as two packages:

    apt-get install -y nginx libnginx-mod-nchan

`start` runs nginx as the current user from a configuration in a temporary folder, on a free
port, in one process (`master_process off`, `daemon off`), so the process the bench pins,
measures and stops is the one that serves. `POST /pub` publishes to the one channel `all`;
`GET /sub` is a WebSocket subscriber of it. No message is kept for late subscribers beyond the
module's default buffer, and nothing is sent on connect.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _procs import free_port

MODULE_PATHS = ("/usr/lib/nginx/modules/ngx_nchan_module.so",
                "/usr/lib64/nginx/modules/ngx_nchan_module.so",
                "/usr/local/lib/nginx/modules/ngx_nchan_module.so")

CONF = """\
load_module {module};
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {nofile};
error_log {folder}/error.log warn;
pid {folder}/nginx.pid;
events {{ worker_connections {connections}; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    nchan_max_reserved_memory 256M;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /pub {{ nchan_publisher; nchan_channel_id all; }}
        location = /sub {{ nchan_subscriber websocket; nchan_channel_id all; }}
        location = /healthz {{ return 200 "ok"; }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None)


def module_path() -> str | None:
    return next((p for p in MODULE_PATHS if Path(p).exists()), None)


def missing() -> str | None:
    """Why nchan cannot run here, or None."""
    if nginx_binary() is None:
        return "nginx is not installed (apt-get install -y nginx libnginx-mod-nchan)"
    if module_path() is None:
        return "the nchan module is not installed (apt-get install -y libnginx-mod-nchan)"
    return None


@dataclass
class Nchan:
    port: int
    proc: subprocess.Popen[bytes]
    folder: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.folder / "error.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM (fast shutdown), then SIGKILL; only this pid."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.folder, ignore_errors=True)


def start(pin: list[str], nofile: int, connections: int) -> Nchan:
    why = missing()
    if why:
        raise RuntimeError(why)
    folder = Path(tempfile.mkdtemp(prefix="realtime_nchan_"))
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(CONF.format(module=module_path(), folder=folder, port=port, nofile=nofile,
                                connections=connections))
    with (folder / "stderr.log").open("wb") as out:
        proc = subprocess.Popen([*pin, str(nginx_binary()), "-p", str(folder), "-c", str(conf),
                                 "-e", str(folder / "error.log")], stdout=out, stderr=subprocess.STDOUT)
    server = Nchan(port, proc, folder)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (folder / "stderr.log").read_text(errors="replace") + server.log_tail()
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"nginx exited with {proc.returncode}: {tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError("nginx did not listen within 10 s")
