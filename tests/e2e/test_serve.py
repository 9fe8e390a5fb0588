"""The real `tidings serve` process, as a newcomer meets it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import POSTGRES_URL, require_postgres

pytestmark = pytest.mark.e2e
TIDINGS = [sys.executable, "-m", "tidings"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cwd: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    full_env.update(env)
    proc = subprocess.Popen([*TIDINGS, "serve", "--port", str(port), *args], cwd=cwd,
                            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"tidings serve exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return proc, port
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("tidings serve did not come up in 20 s")


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def test_fresh_install_walkthrough(tmp_path: Path) -> None:
    """Embedded default: SQLite file, key file made, admin key printed once, log provider."""
    proc, port = start(tmp_path, {})
    base = f"http://127.0.0.1:{port}"
    try:
        # The admin key is printed on first start; read it from the output so far.
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        match = re.search(r"(tda_[A-Za-z0-9_-]{20,})", out)
        assert match, out
        admin = match.group(1)
        assert "created the secret key file" in out
        assert (tmp_path / "tidings.db").exists() and (tmp_path / "tidings.db.key").exists()
        assert oct((tmp_path / "tidings.db.key").stat().st_mode)[-3:] == "600"

        # A second start creates no new admin key and keeps the secret key file.
        proc, port = start(tmp_path, {})
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=5) as c:
            a = {"Authorization": f"Bearer {admin}"}
            assert c.put("/v1/apps/shop", json={"name": "Shop"}, headers=a).status_code == 201
            key = c.post("/v1/apps/shop/keys", headers=a).json()["key"]
            k = {"Authorization": f"Bearer {key}"}
            r = c.post("/v1/users/ada/devices", json={"platform": "android", "token": "tok"}, headers=k)
            assert r.status_code == 201
            r = c.post("/v1/notifications", json={"to": {"user_id": "ada"}, "title": "Hello"}, headers=k)
            note = r.json()["items"][0]
            for _ in range(50):
                status = c.get(f"/v1/notifications/{note['id']}", headers=k).json()["status"]
                if status == "sent":
                    break
                time.sleep(0.1)
            assert status == "sent"
            token = c.post("/v1/users/ada/tokens", headers=k).json()["token"]
            me = {"Authorization": f"Bearer {token}"}
            inbox = c.get("/v1/users/me/notifications", headers=me).json()
            assert inbox["unread_count"] == 1
            r = c.post(f"/v1/users/me/notifications/{note['id']}/read", headers=me)
            assert r.status_code == 200
            assert c.get("/readyz").status_code == 200
    finally:
        out = stop(proc)
    assert "First start" not in out  # the admin key is shown only once
    (line,) = [ln for ln in out.splitlines() if "push to" in ln]
    assert "push to *** via log" in line  # the device token is masked in the log


def test_postgres_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    require_postgres()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["TIDINGS_DATABASE_URL"] = POSTGRES_URL
    r = subprocess.run([*TIDINGS, "serve", "--port", str(free_port())], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "TIDINGS_SECRET_KEY" in r.stderr and "tidings secret-key" in r.stderr


def test_cli_basics(tmp_path: Path) -> None:
    r = subprocess.run([*TIDINGS, "version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and re.match(r"\d+\.\d+\.\d+", r.stdout.strip())
    r = subprocess.run([*TIDINGS, "secret-key"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and len(r.stdout.strip()) == 44
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["TIDINGS_DATABASE_URL"] = "mysql://nope"
    r = subprocess.run([*TIDINGS, "migrate"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "TIDINGS_DATABASE_URL" in r.stderr


def test_cluster_mode_api_and_separate_workers(tmp_path: Path) -> None:
    """PostgreSQL: two API processes without workers, two workers; every send goes out once."""
    import asyncio
    import uuid

    from tests.conftest import _drop_schema

    url = require_postgres()
    schema = f"e2e_{uuid.uuid4().hex[:10]}"
    env = {"TIDINGS_DATABASE_URL": url, "TIDINGS_DATABASE_SCHEMA": schema,
           "TIDINGS_SECRET_KEY": "cluster-secret-key-0123456789-abcdefghij",
           "TIDINGS_ADMIN_KEY": "tda_cluster-admin-0123456789", "TIDINGS_RATE_LIMIT_PER_SECOND": "0",
           "TIDINGS_WORKER_POLL_INTERVAL": "0.1"}
    procs: list[subprocess.Popen[str]] = []
    try:
        api1, port1 = start(tmp_path, env, "--no-worker")
        procs.append(api1)
        api2, port2 = start(tmp_path, env, "--no-worker")
        procs.append(api2)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")} | env
        for _ in range(2):
            procs.append(subprocess.Popen([*TIDINGS, "worker"], cwd=tmp_path, env=full_env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        admin = {"Authorization": "Bearer tda_cluster-admin-0123456789"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port1}", timeout=5) as c1, \
                httpx.Client(base_url=f"http://127.0.0.1:{port2}", timeout=5) as c2:
            assert c1.put("/v1/apps/shop", json={"name": "Shop"}, headers=admin).status_code == 201
            key = c2.post("/v1/apps/shop/keys", headers=admin).json()["key"]
            k = {"Authorization": f"Bearer {key}"}
            for i in range(20):
                c = c1 if i % 2 else c2
                assert c.post(f"/v1/users/u{i}/devices", json={"platform": "ios", "token": f"t{i}"},
                              headers=k).status_code == 201
            ids = []
            for i in range(20):
                c = c2 if i % 2 else c1
                r = c.post("/v1/notifications", json={"to": {"user_ids": [f"u{i}"]}, "title": "hi",
                                                      "channels": ["push"]}, headers=k)
                ids.append(r.json()["items"][0]["id"])
            deadline = time.monotonic() + 20
            pending = set(ids)
            while pending and time.monotonic() < deadline:
                for nid in list(pending):
                    doc = c1.get(f"/v1/notifications/{nid}", headers=k).json()
                    if doc["status"] == "sent":
                        assert doc["deliveries"][0]["attempts"] == 1
                        pending.discard(nid)
                time.sleep(0.1)
            assert not pending
    finally:
        outputs = [stop(p) for p in procs]
        asyncio.run(_drop_schema(schema))
    worker_logs = "".join(outputs[2:])
    assert worker_logs.count("via log") == 20  # each delivery sent by exactly one worker
