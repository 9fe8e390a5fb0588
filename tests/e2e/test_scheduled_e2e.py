"""Scheduled sends fire within a second of their time on the real processes: `tidings serve`
on SQLite, and on PostgreSQL with API nodes and two separate workers (each fires once)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import _drop_schema, require_postgres
from tests.e2e.test_serve import TIDINGS, start, stop
from tidings.domain.ids import timestamp_ms

pytestmark = pytest.mark.e2e
ADMIN = {"Authorization": "Bearer tda_schedule-admin-0123456789"}
BASE_ENV = {"TIDINGS_SECRET_KEY": "schedule-secret-key-0123456789-abcdefghij",
            "TIDINGS_ADMIN_KEY": "tda_schedule-admin-0123456789",
            "TIDINGS_RATE_LIMIT_PER_SECOND": "0"}


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _schedule_and_check(base: str, ahead: float = 2.0) -> int:
    """Schedules 8 single sends and a topic broadcast `ahead` seconds ahead; returns how many
    pushes went."""
    with httpx.Client(base_url=base, timeout=5) as c:
        assert c.put("/v1/apps/shop", json={"name": "Shop"}, headers=ADMIN).status_code == 201
        k = {"Authorization": f"Bearer {c.post('/v1/apps/shop/keys', headers=ADMIN).json()['key']}"}
        assert c.put("/v1/topics/news", json={}, headers=k).status_code == 201
        for i in range(8):
            assert c.post(f"/v1/users/u{i}/devices", json={"platform": "ios", "token": f"t{i}"},
                          headers=k).status_code == 201
            assert c.put(f"/v1/topics/news/subscribers/u{i}", headers=k).status_code == 201
        at = datetime.now(UTC) + timedelta(seconds=ahead)
        ids = [c.post("/v1/notifications", json={
            "to": {"user_id": f"u{i}"}, "title": "later", "channels": ["push", "in_app"],
            "send_at": _iso(at)}, headers=k).json()["items"][0]["id"] for i in range(8)]
        b = c.post("/v1/broadcasts", json={"to": {"topic": "news"}, "title": "all",
                                           "channels": ["in_app"], "send_at": _iso(at)},
                   headers=k).json()
        assert b["status"] == "scheduled"
        deadline = time.monotonic() + 20
        fired: dict[str, dict] = {}
        while len(fired) < len(ids) and time.monotonic() < deadline:
            for nid in ids:
                doc = c.get(f"/v1/notifications/{nid}", headers=k).json()
                if doc["status"] == "sent":
                    fired[nid] = doc
            time.sleep(0.05)
        assert len(fired) == len(ids), "scheduled notifications did not all go"
        for doc in fired.values():
            # A delivery's id carries the moment it was planned, i.e. when the send fired.
            lateness = [timestamp_ms(d["id"]) - _ms(doc["send_at"]) for d in doc["deliveries"]]
            assert all(0 <= late < 1000 for late in lateness), lateness
        while time.monotonic() < deadline:
            done = c.get(f"/v1/broadcasts/{b['id']}", headers=k).json()
            if done["status"] == "completed":
                break
            time.sleep(0.05)
        assert done["status"] == "completed" and done["sent"] == 8, done
        inbox = c.get("/v1/users/u3/notifications", headers=k).json()
        assert sorted(n["title"] for n in inbox["items"]) == ["all", "later"]
        return len(ids)


def test_scheduled_sends_fire_on_time_embedded(tmp_path: Path) -> None:
    proc, port = start(tmp_path, BASE_ENV)
    try:
        _schedule_and_check(f"http://127.0.0.1:{port}")
    finally:
        stop(proc)


def test_scheduled_sends_fire_once_across_workers(tmp_path: Path) -> None:
    url = require_postgres()
    schema = f"e2e_{uuid.uuid4().hex[:10]}"
    env = {**BASE_ENV, "TIDINGS_DATABASE_URL": url, "TIDINGS_DATABASE_SCHEMA": schema,
           "TIDINGS_WORKER_POLL_INTERVAL": "0.1"}
    procs: list[subprocess.Popen[str]] = []
    try:
        api, port = start(tmp_path, env, "--no-worker")
        procs.append(api)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")} | env
        for _ in range(2):
            procs.append(subprocess.Popen([*TIDINGS, "worker"], cwd=tmp_path, env=full_env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
        # Ahead enough for the workers just started to be up (importing takes a second or two).
        sent = _schedule_and_check(f"http://127.0.0.1:{port}", ahead=6.0)
    finally:
        outputs = [stop(p) for p in procs]
        asyncio.run(_drop_schema(schema))
    assert "".join(outputs[1:]).count("via log") == sent  # each push went exactly once
