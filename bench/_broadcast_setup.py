"""The audience of bench/broadcast.py, written straight into the tables with bulk inserts (the
HTTP API would take minutes for 100,000 users): users with attributes and a timezone, the
attribute index rows the store keeps beside them, one Android device each, and a topic that
every user is subscribed to."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from _common import console, progress
from sqlalchemy import insert

from tidings.adapters.store.sql.schema import (
    devices,
    topic_subscriptions,
    topics,
    user_attributes,
    users,
)
from tidings.adapters.store.sql.store import SqlStore
from tidings.domain.devices import token_key
from tidings.domain.ids import new_id
from tidings.domain.segments import attribute_rows

# ~30 countries with a timezone each. Weights fall off as 1 / rank^1.5, so the first few hold
# most users and the last one about a quarter of a percent: a "rare value" to filter on.
COUNTRIES = (
    ("US", "America/New_York"), ("DE", "Europe/Berlin"), ("GB", "Europe/London"),
    ("FR", "Europe/Paris"), ("IN", "Asia/Kolkata"), ("BR", "America/Sao_Paulo"),
    ("JP", "Asia/Tokyo"), ("CA", "America/Toronto"), ("IT", "Europe/Rome"),
    ("ES", "Europe/Madrid"), ("AU", "Australia/Sydney"), ("NL", "Europe/Amsterdam"),
    ("MX", "America/Mexico_City"), ("SE", "Europe/Stockholm"), ("PL", "Europe/Warsaw"),
    ("KR", "Asia/Seoul"), ("CH", "Europe/Zurich"), ("BE", "Europe/Brussels"),
    ("AT", "Europe/Vienna"), ("NO", "Europe/Oslo"), ("DK", "Europe/Copenhagen"),
    ("FI", "Europe/Helsinki"), ("IE", "Europe/Dublin"), ("PT", "Europe/Lisbon"),
    ("NZ", "Pacific/Auckland"), ("SG", "Asia/Singapore"), ("ZA", "Africa/Johannesburg"),
    ("AR", "America/Argentina/Buenos_Aires"), ("CZ", "Europe/Prague"), ("IS", "Atlantic/Reykjavik"),
)
RARE_COUNTRY = COUNTRIES[-1][0]
_WEIGHTS = [1 / (rank ** 1.5) for rank in range(1, len(COUNTRIES) + 1)]


def user_id(index: int) -> str:
    """Zero-padded, so that id order (the order a broadcast walks) is index order."""
    return f"user-{index:07d}"


@dataclass(frozen=True)
class Audience:
    users: int
    seed: int

    def people(self) -> Iterator[tuple[str, dict[str, Any], str]]:
        """(user id, attributes, timezone) of every user, the same for one seed."""
        rng = random.Random(self.seed)
        for i in range(self.users):
            draw = rng.random()
            if draw < 0.10:
                plan, seats = "pro", rng.randint(1, 20)
            elif draw < 0.20:
                plan, seats = "team", rng.randint(5, 500)
            else:
                plan, seats = "free", 1
            country, zone = rng.choices(COUNTRIES, _WEIGHTS)[0]
            yield user_id(i), {"plan": plan, "seats": seats, "country": country}, zone


@dataclass
class Loaded:
    seconds: float
    users: int
    attribute_rows: int
    devices: int


async def load_audience(store: SqlStore, app_id: str, audience: Audience,
                        chunk: int = 5000) -> Loaded:
    """Users, their attribute rows and one enabled Android device each (provider left to the
    app's routing), `chunk` users per transaction, one executemany per table."""
    started = time.perf_counter()
    at = int(time.time() * 1000)
    n_attr = n_dev = 0
    batch_users: list[dict[str, Any]] = []
    batch_attrs: list[dict[str, Any]] = []
    batch_devices: list[dict[str, Any]] = []

    async def flush() -> None:
        async with store.transaction() as tx:
            conn: Any = tx.connection
            await conn.execute(insert(users), batch_users)
            await conn.execute(insert(user_attributes), batch_attrs)
            await conn.execute(insert(devices), batch_devices)

    with progress() as bar:
        task = bar.add_task(f"{store.dialect}: inserting users, attributes, devices",
                            total=audience.users)
        for uid, attributes, zone in audience.people():
            batch_users.append({
                "app_id": app_id, "id": uid, "email": None, "phone": None, "timezone": zone,
                "locale": None, "attributes": attributes, "created_at": at, "updated_at": at,
                "email_undeliverable_at": None, "email_undeliverable_reason": None,
                "quiet_hours": None})
            for path, kind, text, num in attribute_rows(attributes):
                batch_attrs.append({"app_id": app_id, "user_id": uid, "path": path,
                                    "kind": kind, "text": text, "num": num})
            token = f"bench-fcm-{uid}-{new_id(at)}"
            batch_devices.append({
                "id": new_id(at), "app_id": app_id, "user_id": uid, "platform": "android",
                "token": token, "token_key": token_key(token), "provider": None,
                "enabled": True, "disabled_reason": None, "device_info": None,
                "app_version": None, "created_at": at, "last_seen_at": at,
                "provider_ref": None})
            if len(batch_users) >= chunk:
                await flush()
                n_attr += len(batch_attrs)
                n_dev += len(batch_devices)
                bar.advance(task, len(batch_users))
                batch_users, batch_attrs, batch_devices = [], [], []
        if batch_users:
            await flush()
            n_attr += len(batch_attrs)
            n_dev += len(batch_devices)
            bar.advance(task, len(batch_users))
    took = time.perf_counter() - started
    console.print(f"{store.dialect}: {audience.users:,} users, {n_attr:,} attribute rows and "
                  f"{n_dev:,} devices inserted in {took:.1f} s "
                  f"({audience.users / took:,.0f} users/s)")
    return Loaded(took, audience.users, n_attr, n_dev)


async def subscribe_all(store: SqlStore, app_id: str, topic: str, audience: Audience,
                        chunk: int = 10_000) -> float:
    """The topic and a subscription of every user; returns the seconds it took."""
    started = time.perf_counter()
    at = int(time.time() * 1000)
    async with store.transaction() as tx:
        await tx.connection.execute(insert(topics), [
            {"app_id": app_id, "key": topic, "name": f"Bench {topic}", "created_at": at,
             "updated_at": at}])
    with progress() as bar:
        task = bar.add_task(f"{store.dialect}: subscribing every user to {topic}",
                            total=audience.users)
        for start in range(0, audience.users, chunk):
            stop = min(audience.users, start + chunk)
            async with store.transaction() as tx:
                await tx.connection.execute(insert(topic_subscriptions), [
                    {"app_id": app_id, "topic": topic, "user_id": user_id(i), "created_at": at}
                    for i in range(start, stop)])
            bar.advance(task, stop - start)
    return time.perf_counter() - started
