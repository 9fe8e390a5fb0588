"""A broadcast to a topic of 100,000 users, on SQLite and PostgreSQL: how fast the worker
expands it into one notification per recipient, how long until every delivery is done, and
how fast a segment's audience is previewed; against the bare writes of the same rows.

    .venv/bin/python bench/broadcast.py [--users 100000] [--only sqlite,postgres]
        [--rounds 3] [--batch 1000] [--profile]

Setup (bulk inserts, not timed; bench/_broadcast_setup.py): --users users, each with
attributes {"plan": pro | free | team (10 / 80 / 10 %), "seats": int, "country": one of 30
codes, the last one rare} and a timezone, the attribute index rows the store keeps for them, one
enabled Android device each (the app routes Android push to the `log` provider, whose logger
is silenced), and per round a fresh topic that every user is subscribed to.

Each round (--rounds, medians printed):

1. expansion: `container.broadcasts.create(...)` to the round's topic (channels push +
   in_app), then `container.broadcasts.run_once()` until it returns 0: recipients/s (target
   ≥ 20,000/s), and the time of each batch of --batch recipients (from one batch's cursor
   update to the next, so each includes a commit);
2. delivery: the delivery worker (`container.dispatcher.run(stop)`, --lanes lanes, batches of
   --worker-batch) until it has handled every pending delivery of the broadcast: seconds and
   deliveries/s; POST → all done is create + expansion + delivery;
3. baselines: the rows the expansion wrote (read back, not timed: notifications, deliveries,
   stream events, and the users' inbox counters) written again under new ids, in batches of
   --batch recipients, one transaction each, one executemany per table: "Core", through the
   store's own connection with SQLAlchemy Core inserts, as the repositories write; "driver",
   straight on sqlite3 / asyncpg (JSON serialised in the timed part); on PostgreSQL also
   "COPY" (the counters' upsert still by executemany), the database's own ceiling. Expansion
   / baseline is the share of the bare write rate the expansion reaches. The baselines take
   turns at going first; their pending deliveries are due in the year 9999, so the worker
   never takes them.

On PostgreSQL each timed phase starts after a VACUUM ANALYZE of the tables written so far
(--no-vacuum: none), standing in for autovacuum, which test servers often run without: every
delivery's claim and record update indexed columns and leave dead index entries behind, and
without vacuum the delivery rate fell from round to round (5,900 → 4,700 → 3,600/s over three
rounds of 30,000 here, against 7,100, 5,500, 6,600/s with it).

Then (unless --no-together) one more broadcast with the expansion and the delivery worker
running at once, as `tidings worker` runs them: from create to the last delivery recorded.

Last, the segment preview: `GET /v1/users?filter=<json>&limit=50` (with and without
`count=true`) through the HTTP app in process (httpx.ASGITransport), and the same through
`container.users.list/count`, for four filters (a common value, a rare value, a range, an
$or), --requests requests each after --warmup (fewer if a case takes over --preview-budget
seconds): p50 and p99 (target p99 ≤ 50 ms). The first pages and the totals are checked
against the audience as generated.

Nothing asserts a timing: the figures are printed. --profile prints a cProfile of round 1's
expansion, by function and by file.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import itertools
import logging
import math
import pstats
import re
import signal
import socket
import sqlite3
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from _broadcast_setup import RARE_COUNTRY, Audience, load_audience, subscribe_all
from _common import (
    ADMIN_KEY,
    POSTGRES_URL,
    SECRET_KEY,
    BenchStore,
    bench_store,
    check_quiet,
    console,
    median,
    ms,
    percentile,
    pg_execute,
    progress,
    ratio,
    verdict,
)
from rich.table import Table
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.types import JSON

from tidings.adapters.store.sql.broadcasts import SqlBroadcasts
from tidings.adapters.store.sql.schema import (
    deliveries,
    inbox_counters,
    notifications,
    stream_events,
)
from tidings.adapters.store.sql.store import _SQLITE_PRAGMAS, InlineConnection, SqlStore, _named
from tidings.bootstrap import Container, build
from tidings.domain.ids import new_id
from tidings.domain.notifications import CHANNEL_BITS, Message
from tidings.domain.segments import parse_segment
from tidings.entrypoints.http.app import create_app
from tidings.service.apps import AppChanges
from tidings.service.broadcasting import BroadcastView
from tidings.settings import Settings

APP = "bench"
TARGET_RATE = 20_000
TARGET_PREVIEW_P99 = 0.050
FAR_FUTURE_MS = 253_402_300_799_000  # 9999-12-31: never due
MESSAGE = Message(channels=("push", "in_app"), title="Spring sale",
                  body="Everything 20% off until Sunday", data={"campaign": "spring"})
FILTERS: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ("plan = pro (~10%)", {"attributes.plan": "pro"}, lambda a: a["plan"] == "pro"),
    (f"country = {RARE_COUNTRY} (rare)", {"attributes.country": RARE_COUNTRY},
     lambda a: a["country"] == RARE_COUNTRY),
    ("seats ≥ 100 (range)", {"attributes.seats": {"$gte": 100}}, lambda a: a["seats"] >= 100),
    ("$or: plan = team, country = rare", {"$or": [{"attributes.plan": "team"},
                                                  {"attributes.country": RARE_COUNTRY}]},
     lambda a: a["plan"] == "team" or a["country"] == RARE_COUNTRY),
]


# --- each batch of an expansion: stamped when the broadcast's cursor moves ---------------------
class Batches:
    """Times at which the expansion's batches moved the cursor (wrapped here, not in src)."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.on_batch: Callable[[int], None] | None = None

    def durations(self, started: float) -> list[float]:
        edges = [started, *self.marks]
        return [b - a for a, b in itertools.pairwise(edges)]


batches = Batches()
_advance = SqlBroadcasts.advance


async def _advance_stamped(self: SqlBroadcasts, broadcast: Any, lease_id: str,
                           lease_until: Any) -> bool:
    moved = await _advance(self, broadcast, lease_id, lease_until)
    batches.marks.append(time.perf_counter())
    if batches.on_batch is not None:
        batches.on_batch(broadcast.expanded)
    return moved


SqlBroadcasts.advance = _advance_stamped  # type: ignore[method-assign]


# --- time of each kind of statement while `watching` ----------------------------------------
sql_seconds: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
watching = False


def statement_kind(statement: str) -> str:
    text = re.sub(r"\s+", " ", statement).strip()
    found = re.match(r"(SELECT|UPDATE|INSERT INTO|DELETE FROM) (\w+)", text)
    if found is None:
        return text[:40]
    verb, name = found.groups()
    if verb == "SELECT":
        table = re.search(r" FROM (\w+)", text)
        return f"SELECT … FROM {table.group(1) if table else '?'}"
    extra = (" ON CONFLICT" if " ON CONFLICT " in text else "") + (
        " RETURNING" if " RETURNING " in text else "")
    return f"{verb} {name}{extra}"


@event.listens_for(Engine, "before_cursor_execute")
def _before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
            executemany: bool) -> None:
    conn.info.setdefault("bench_started", []).append(time.perf_counter())


@event.listens_for(Engine, "after_cursor_execute")
def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
           executemany: bool) -> None:
    started = conn.info["bench_started"].pop()
    if watching:
        entry = sql_seconds[statement_kind(statement) + (" (many)" if executemany else "")]
        entry[0] += 1
        entry[1] += time.perf_counter() - started


def _plain_timed(method: Callable[..., Awaitable[Any]], suffix: str) -> Callable[..., Awaitable[Any]]:
    """The store's statements that go straight to sqlite3, past SQLAlchemy's events."""
    async def wrapper(self: InlineConnection, statement: Any, parameters: Any) -> Any:
        started = time.perf_counter()
        try:
            return await method(self, statement, parameters)
        finally:
            if watching:
                entry = sql_seconds[statement_kind(_named(statement)[0]) + suffix]
                entry[0] += 1
                entry[1] += time.perf_counter() - started
    return wrapper


InlineConnection.executemany_plain = _plain_timed(  # type: ignore[method-assign, assignment]
    InlineConnection.executemany_plain, " (many, sqlite3)")
InlineConnection.fetch_plain = _plain_timed(  # type: ignore[method-assign, assignment]
    InlineConnection.fetch_plain, " (sqlite3)")


@contextmanager
def watched() -> Iterator[dict[str, list[float]]]:
    global watching
    sql_seconds.clear()
    watching = True
    try:
        yield sql_seconds
    finally:
        watching = False


# --- results --------------------------------------------------------------------------------
@dataclass
class Round:
    create: float
    expansion: float
    batches: list[float]
    delivery: float
    delivered: int
    baseline: float
    baseline_batches: list[float]
    driver: float
    copy: float  # NaN where there is no COPY (SQLite)

    @property
    def total(self) -> float:
        return self.create + self.expansion + self.delivery


@dataclass
class Preview:
    label: str
    via: str
    count: bool
    matching: int
    times: list[float]


@dataclass
class Report:
    backend: str
    users: int
    setup: float = 0.0
    rounds: list[Round] = field(default_factory=list)
    together: float = math.nan
    together_expanded: float = math.nan
    previews: list[Preview] = field(default_factory=list)
    statements: dict[str, list[float]] = field(default_factory=dict)
    first_expansion: float = math.nan
    problems: list[str] = field(default_factory=list)

    def med(self, name: str) -> float:
        return median([getattr(r, name) for r in self.rounds])


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.nan


def per_s(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def secs(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


# --- the phases -----------------------------------------------------------------------------
def _id_of(view: BroadcastView) -> tuple[int, bytes]:
    return 202, view.broadcast.id.encode()


async def create_broadcast(container: Container, topic: str) -> str:
    answer = await container.broadcasts.create(APP, {"topic": topic}, MESSAGE, None, None,
                                               _id_of)
    return answer.body.decode()


async def expand(container: Container, users: int, label: str,
                 profiler: cProfile.Profile | None) -> tuple[float, list[float]]:
    """run_once() until it returns 0; (seconds, batch durations)."""
    batches.marks.clear()
    with progress() as bar:
        task = bar.add_task(f"{label}: expansion", total=users)
        batches.on_batch = lambda expanded: bar.update(task, completed=expanded)
        gc.collect()
        if profiler is not None:
            profiler.enable()
        started = time.perf_counter()
        try:
            for _ in range(users + 10):  # bounded, whatever happens
                if await container.broadcasts.run_once() == 0:
                    break
        finally:
            took = time.perf_counter() - started
            if profiler is not None:
                profiler.disable()
            batches.on_batch = None
    return took, batches.durations(started)


async def pending_of(store: SqlStore, broadcast_id: str) -> int:
    async with store.reader() as tx:
        conn: Any = tx.connection
        return int((await conn.execute(
            select(func.count()).select_from(deliveries)
            .join(notifications, notifications.c.id == deliveries.c.notification_id)
            .where(notifications.c.broadcast_id == broadcast_id,
                   deliveries.c.status == "pending"))).scalar_one())


@contextmanager
def counting(container: Container, expected: int, stop: asyncio.Event,
             on_progress: Callable[[int], None]) -> Iterator[list[int]]:
    """The dispatcher's rounds counted; `stop` is set once `expected` deliveries were handled."""
    dispatcher = container.dispatcher
    original = dispatcher.run_once
    handled = [0]

    async def run_once() -> int:
        n = await original()
        handled[0] += n
        on_progress(handled[0])
        if handled[0] >= expected:
            stop.set()
        return n

    dispatcher.run_once = run_once  # type: ignore[method-assign]
    try:
        yield handled
    finally:
        del dispatcher.run_once


async def deliver(container: Container, expected: int, label: str) -> tuple[float, int]:
    """The delivery worker with its lanes until `expected` deliveries were handled."""
    stop = asyncio.Event()
    timeout = max(120.0, expected / 200)
    with progress() as bar:
        task = bar.add_task(f"{label}: delivery", total=expected)
        with counting(container, expected, stop,
                      lambda n: bar.update(task, completed=n)) as handled:
            gc.collect()
            started = time.perf_counter()
            try:
                await asyncio.wait_for(container.dispatcher.run(stop), timeout)
            except TimeoutError:
                stop.set()
                console.print(f"[red]{label}: the worker handled {handled[0]:,} of "
                              f"{expected:,} deliveries in {timeout:.0f} s[/]")
            took = time.perf_counter() - started
    return took, handled[0]


async def together(container: Container, topic: str, expected: int,
                   label: str) -> tuple[float, float]:
    """Create, then the expansion and the delivery worker at once until every delivery is
    handled; (seconds from create to the last delivery, seconds from create to the
    broadcast's last batch)."""
    stop = asyncio.Event()
    timeout = max(300.0, expected / 100)
    batches.marks.clear()
    with progress() as bar:
        task = bar.add_task(f"{label}: expansion + delivery at once", total=expected)
        with counting(container, expected, stop,
                      lambda n: bar.update(task, completed=n)) as handled:
            gc.collect()
            started = time.perf_counter()
            await create_broadcast(container, topic)
            try:
                await asyncio.wait_for(asyncio.gather(container.broadcasts.run(stop),
                                                      container.dispatcher.run(stop)), timeout)
            except TimeoutError:
                stop.set()
                console.print(f"[red]{label}: {handled[0]:,} of {expected:,} deliveries in "
                              f"{timeout:.0f} s[/]")
            took = time.perf_counter() - started
    expanded = batches.marks[-1] - started if batches.marks else math.nan
    return took, expanded


# --- the baselines: the same rows, bare ------------------------------------------------------
COUNT_COLUMNS = ("unread", *(f"unread_{c.value}" for c in CHANNEL_BITS), "stream_seq")


def counter_upsert(dialect: str) -> Any:
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(inbox_counters)
    return stmt.on_conflict_do_update(
        index_elements=[inbox_counters.c.app_id, inbox_counters.c.user_id],
        set_={name: inbox_counters.c[name] + stmt.excluded[name] for name in COUNT_COLUMNS})


@dataclass
class Written:
    """What the expansion wrote for one broadcast, in user order."""

    notes: list[dict[str, Any]]
    sends: list[dict[str, Any]]
    events: list[dict[str, Any]]


@dataclass
class BareBatch:
    notes: list[dict[str, Any]]
    sends: list[dict[str, Any]]
    counters: list[dict[str, Any]]
    events: list[dict[str, Any]]

    @property
    def recipients(self) -> int:
        return len(self.notes)


async def read_back(store: SqlStore, broadcast_id: str, since_ms: int) -> Written:
    async with store.reader() as tx:
        conn: Any = tx.connection
        ids = select(notifications.c.id).where(notifications.c.broadcast_id == broadcast_id)
        notes = [dict(r._mapping) for r in await conn.execute(
            select(notifications).where(notifications.c.broadcast_id == broadcast_id)
            .order_by(notifications.c.user_id))]
        sends = [dict(r._mapping) for r in await conn.execute(
            select(deliveries).where(deliveries.c.notification_id.in_(ids))
            .order_by(deliveries.c.id))]
        events = [dict(r._mapping) for r in await conn.execute(
            select(stream_events).where(stream_events.c.app_id == APP,
                                        stream_events.c.created_at >= since_ms,
                                        stream_events.c.type == "notification.created")
            .order_by(stream_events.c.user_id, stream_events.c.seq))]
    return Written(notes, sends, events)


def bare_batches(written: Written, batch: int, seq_offset: int) -> list[BareBatch]:
    """The rows under new ids (a broadcast id of their own, pending deliveries never due,
    stream numbers `seq_offset` above the real ones), with the counter changes they make, in
    batches of `batch` recipients as the expansion wrote them."""
    bare_id = new_id()
    renamed: dict[str, str] = {}
    notes = []
    for n in written.notes:
        copy = {**n, "id": new_id(n["created_at"]), "broadcast_id": bare_id}
        renamed[n["id"]] = copy["id"]
        notes.append(copy)
    sends_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in written.sends:
        copy = {**d, "id": new_id(d["created_at"]), "notification_id": renamed[d["notification_id"]]}
        if copy["due_at"] is not None:
            copy["due_at"] = FAR_FUTURE_MS
        sends_of[copy["notification_id"]].append(copy)
    events_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in written.events:
        events_of[e["user_id"]].append({**e, "seq": e["seq"] + seq_offset})
    out: list[BareBatch] = []
    for start in range(0, len(notes), batch):
        chunk = notes[start:start + batch]
        counters: dict[str, dict[str, Any]] = {}
        for n in chunk:
            row = counters.setdefault(n["user_id"], {
                "app_id": APP, "user_id": n["user_id"], **dict.fromkeys(COUNT_COLUMNS, 0)})
            row["unread"] += 1
            for channel, bit in CHANNEL_BITS.items():
                if n["channel_mask"] & bit:
                    row[f"unread_{channel.value}"] += 1
            row["stream_seq"] += len(events_of.get(n["user_id"], ()))
        users = sorted(counters)
        out.append(BareBatch(chunk, [d for n in chunk for d in sends_of[n["id"]]],
                             [counters[u] for u in users],
                             [e for u in users for e in events_of.get(u, ())]))
    return out


class CoreWriter:
    """Through the store's own connection and transaction: SQLAlchemy Core executemany, as
    the store's repositories write."""

    name = "Core"

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._upsert = counter_upsert(store.dialect)

    async def __aenter__(self) -> CoreWriter:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def write(self, b: BareBatch) -> None:
        async with self._store.transaction() as tx:
            conn: Any = tx.connection
            await conn.execute(insert(notifications), b.notes)
            if b.sends:
                await conn.execute(insert(deliveries), b.sends)
            await conn.execute(self._upsert, b.counters)
            if b.events:
                await conn.execute(insert(stream_events), b.events)


def _plain_sql(table: Any, marks: Callable[[int], str], conflict: bool = False) -> str:
    names = [c.name for c in table.c]
    sql = (f"INSERT INTO {table.name} ({', '.join(names)}) "
           f"VALUES ({', '.join(marks(i) for i in range(len(names)))})")
    if conflict:
        sql += (" ON CONFLICT (app_id, user_id) DO UPDATE SET " + ", ".join(
            f"{c} = {table.name}.{c} + excluded.{c}" for c in COUNT_COLUMNS))
    return sql


def _tuples(table: Any, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rows as the driver takes them: JSON columns serialised (timed: any writer does it)."""
    json_columns = {c.name for c in table.c if isinstance(c.type, JSON)}
    names = [c.name for c in table.c]
    dumps = orjson.dumps
    return [tuple(dumps(r[n]).decode() if n in json_columns and r[n] is not None else r.get(n)
                  for n in names) for r in rows]


class DriverWriter:
    """Straight on the driver, no SQLAlchemy: sqlite3 on a connection of its own to the same
    file (the store's pragmas, BEGIN IMMEDIATE), or asyncpg on a connection of its own in the
    same schema; one transaction per batch, one executemany per table. With `copy`
    (PostgreSQL only) the three plain inserts go by COPY instead (the counters' upsert cannot),
    to show the ceiling of the database itself."""

    name = "driver"
    TABLES = ((notifications, False), (deliveries, False), (inbox_counters, True),
              (stream_events, False))

    def __init__(self, bs: BenchStore, copy: bool = False) -> None:
        self._bs = bs
        self._copy = copy
        if copy:
            self.name = "COPY"
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None
        sqlite = bs.schema is None
        self._sql = [_plain_sql(t, (lambda i: "?") if sqlite else (lambda i: f"${i + 1}"), c)
                     for t, c in self.TABLES]

    async def __aenter__(self) -> DriverWriter:
        if self._bs.sqlite_path is not None:
            self._sqlite = sqlite3.connect(self._bs.sqlite_path, isolation_level=None)
            for pragma in _SQLITE_PRAGMAS:
                self._sqlite.execute(pragma)
        else:
            import asyncpg

            parsed = make_url(self._bs.url)
            self._pg = await asyncpg.connect(
                host=parsed.host, port=parsed.port or 5432, user=parsed.username,
                password=parsed.password, database=parsed.database,
                server_settings={"search_path": self._bs.schema or "public"})
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._pg is not None:
            await self._pg.close()

    async def write(self, b: BareBatch) -> None:
        parts = [rows for rows in (b.notes, b.sends, b.counters, b.events)]
        if self._sqlite is not None:
            conn = self._sqlite
            conn.execute("BEGIN IMMEDIATE")
            try:
                for (table, _), sql, rows in zip(self.TABLES, self._sql, parts, strict=True):
                    if rows:
                        conn.executemany(sql, _tuples(table, rows))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return
        async with self._pg.transaction():
            for (table, upsert), sql, rows in zip(self.TABLES, self._sql, parts, strict=True):
                if not rows:
                    continue
                if self._copy and not upsert:
                    await self._pg.copy_records_to_table(
                        table.name, records=_tuples(table, rows),
                        columns=[c.name for c in table.c], schema_name=self._bs.schema)
                else:
                    await self._pg.executemany(sql, _tuples(table, rows))


async def bare_write(writer: CoreWriter | DriverWriter, work: list[BareBatch],
                     label: str) -> tuple[float, list[float]]:
    times: list[float] = []
    with progress() as bar:
        task = bar.add_task(f"{label}: baseline ({writer.name} executemany)",
                            total=sum(b.recipients for b in work))
        async with writer:
            gc.collect()
            started = time.perf_counter()
            for b in work:
                t0 = time.perf_counter()
                await writer.write(b)
                times.append(time.perf_counter() - t0)
                bar.advance(task, b.recipients)
            took = time.perf_counter() - started
    return took, times


# --- the segment preview --------------------------------------------------------------------
async def preview(container: Container, audience: Audience, args: argparse.Namespace,
                  report: Report) -> None:
    people = list(audience.people())
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.bench") as client:
        r = await client.post(f"/v1/apps/{APP}/keys",
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        r.raise_for_status()
        auth = {"Authorization": f"Bearer {r.json()['key']}"}
        for label, doc, predicate in FILTERS:
            expected = sum(1 for _, attributes, _ in people if predicate(attributes))
            text = orjson.dumps(doc).decode()
            for with_count in (False, True):
                params = {"filter": text, "limit": "50"}
                if with_count:
                    params["count"] = "true"
                seen: dict[str, Any] = {}

                async def http(params: dict[str, str] = params,
                               seen: dict[str, Any] = seen) -> None:
                    answer = await client.get("/v1/users", params=params, headers=auth)
                    if answer.status_code != 200:
                        raise RuntimeError(f"GET /v1/users: {answer.status_code} {answer.text}")
                    seen["body"] = answer.content

                async def direct(doc: dict[str, Any] = doc, with_count: bool = with_count,
                                 seen: dict[str, Any] = seen) -> None:
                    segment = parse_segment(doc, "filter")
                    seen["items"] = await container.users.list(APP, segment, 51, None)
                    if with_count:
                        seen["total"] = await container.users.count(APP, segment)

                for via, call in (("HTTP", http), ("service", direct)):
                    times = await timed(f"{label} via {via}{' + count' if with_count else ''}",
                                        call, args.warmup, args.requests, args.preview_budget)
                    report.previews.append(Preview(label, via, with_count, expected, times))
                body = orjson.loads(seen["body"])
                first = [u for u, attributes, _ in people if predicate(attributes)][:50]
                got = [u["id"] for u in body["items"]]
                if got != first or [u.id for u in seen["items"]][:50] != first:
                    report.problems.append(f"{label}: the first page is not the first 50 "
                                           "matching users by id")
                if with_count and (body.get("total") != expected or seen["total"] != expected):
                    report.problems.append(f"{label}: total {body.get('total')} (HTTP), "
                                           f"{seen['total']} (service), expected {expected}")


async def timed(label: str, call: Callable[[], Awaitable[None]], warmup: int, n: int,
                budget: float) -> list[float]:
    """n timed calls after `warmup`, or fewer when they take more than `budget` seconds."""
    times: list[float] = []
    with progress() as bar:
        task = bar.add_task(label, total=warmup + n)
        for _ in range(warmup):
            await call()
            bar.advance(task)
        deadline = time.perf_counter() + budget
        for _ in range(n):
            started = time.perf_counter()
            await call()
            times.append(time.perf_counter() - started)
            bar.advance(task)
            if started > deadline:
                console.print(f"[yellow]{label}: stopped after {len(times)} of {n} requests "
                              f"(--preview-budget {budget:.0f} s)[/]")
                break
    return times


# --- one backend ----------------------------------------------------------------------------
def postgres_unreachable(url: str) -> str | None:
    parsed = make_url(url)
    host, port = parsed.host or "127.0.0.1", parsed.port or 5432
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"PostgreSQL is not reachable at {host}:{port} ({exc})"


async def run_backend(backend: str, args: argparse.Namespace) -> Report:
    report = Report(backend, args.users)
    audience = Audience(args.users, args.seed)
    async with bench_store(backend, "bench_broadcast", postgres_url=args.postgres_url) as bs:
        store = bs.store
        settings = Settings(database_url=bs.url, secret_key=SECRET_KEY, admin_key=ADMIN_KEY,
                            rate_limit_per_second=0, broadcast_batch_size=args.batch,
                            worker_batch_size=args.worker_batch, worker_lanes=args.lanes)
        container = build(settings, store=store)
        try:
            await container.prepare()
            await container.apps.put(APP, AppChanges(name="Bench",
                                                     routing={"push": {"android": "log"}}))
            await autovacuum_note(bs, args)
            report.setup = (await load_audience(store, APP, audience, args.chunk)).seconds
            await analyze(bs, "users", "user_attributes", "devices")
            for round_no in range(args.rounds):
                await one_round(container, bs, audience, args, report, round_no)
            if not args.no_together:
                topic = "bench-together"
                await subscribe_all(store, APP, topic, audience)
                await vacuum(bs, args, "topic_subscriptions", *WRITTEN)
                report.together, report.together_expanded = await together(
                    container, topic, args.users, f"{backend} together")
                console.print(f"{backend} together: create → all {args.users:,} delivered in "
                              f"{report.together:.2f} s (expansion done after "
                              f"{report.together_expanded:.2f} s)")
            await check_all_sent(store, report)
            await preview(container, audience, args, report)
        finally:
            await container.providers.close()
            await container.event_dispatcher.close()
            await container.streams.hub.close()
    return report


WRITTEN = ("notifications", "deliveries", "inbox_counters", "stream_events")


async def analyze(bs: BenchStore, *tables: str) -> None:
    """PostgreSQL: what autovacuum would have done by the time such tables are read."""
    if bs.schema is not None:
        await pg_execute(bs.url, bs.schema, *(f"ANALYZE {t}" for t in tables))


async def vacuum(bs: BenchStore, args: argparse.Namespace, *tables: str) -> None:
    """PostgreSQL, before a timed phase: clear the dead rows the phases before left (each
    delivery's claim and record leave dead entries in the queue's index), as autovacuum would
    have in the meantime."""
    if bs.schema is not None and not args.no_vacuum:
        await pg_execute(bs.url, bs.schema, *(f"VACUUM ANALYZE {t}" for t in tables))


async def autovacuum_note(bs: BenchStore, args: argparse.Namespace) -> None:
    if bs.schema is None:
        return
    async with bs.store.reader() as tx:
        conn: Any = tx.connection
        state = (await conn.execute(text("SELECT current_setting('autovacuum')"))).scalar_one()
    what = ("nothing (--no-vacuum)" if args.no_vacuum
            else "VACUUM ANALYZE of the written tables before each timed phase")
    console.print(f"postgres: autovacuum is {state} on this server; the bench runs {what}")


async def one_round(container: Container, bs: BenchStore, audience: Audience,
                    args: argparse.Namespace, report: Report, round_no: int) -> None:
    store, n = bs.store, args.users
    label = f"{bs.backend} round {round_no + 1}"
    topic = f"bench-round-{round_no + 1}"
    await subscribe_all(store, APP, topic, audience)
    await analyze(bs, "topic_subscriptions")
    await vacuum(bs, args, *WRITTEN)
    since_ms = int(time.time() * 1000) - 1
    profiler = cProfile.Profile() if args.profile and round_no == 0 else None

    gc.collect()
    started = time.perf_counter()
    broadcast_id = await create_broadcast(container, topic)
    created = time.perf_counter() - started
    with watched() as seen:
        expansion, batch_times = await expand(container, n, label, profiler)
    if round_no == 0:
        report.statements = {k: list(v) for k, v in seen.items()}
        report.first_expansion = expansion
    view = await container.broadcasts.get(APP, broadcast_id)
    if view.broadcast.status != "completed" or view.broadcast.expanded != n:
        report.problems.append(f"{label}: broadcast {view.broadcast.status}, "
                               f"{view.broadcast.expanded:,} of {n:,} expanded")

    written = await read_back(store, broadcast_id, since_ms)
    expected = await pending_of(store, broadcast_id)
    if expected != n:
        report.problems.append(f"{label}: {expected:,} pending deliveries, expected {n:,}")
    await vacuum(bs, args, "notifications", "deliveries")
    delivery, delivered = await deliver(container, expected, label)
    left = await pending_of(store, broadcast_id)
    progress_now = (await container.broadcasts.get(APP, broadcast_id)).progress
    if left:
        report.problems.append(f"{label}: {left:,} deliveries still pending")
    if progress_now.statuses != {"sent": n}:
        report.problems.append(f"{label}: notifications by status {progress_now.statuses}, "
                               f"expected {n:,} sent")

    # The two baselines take turns at going first: each leaves the tables a little larger.
    seconds: dict[str, tuple[float, list[float]]] = {}
    writers: list[CoreWriter | DriverWriter] = [CoreWriter(store), DriverWriter(bs)]
    if bs.schema is not None:
        writers.append(DriverWriter(bs, copy=True))
    turn = round_no % len(writers)
    for k, writer in enumerate(writers[turn:] + writers[:turn], 1):
        work = bare_batches(written, args.batch, k * 10**12 + round_no * 10**10)
        await vacuum(bs, args, *WRITTEN)
        seconds[writer.name] = await bare_write(writer, work, label)
        del work
    del written
    (baseline, baseline_batches), (driver, _) = seconds["Core"], seconds["driver"]
    copy = seconds["COPY"][0] if "COPY" in seconds else math.nan
    result = Round(created, expansion, batch_times, delivery, delivered, baseline,
                   baseline_batches, driver, copy)
    report.rounds.append(result)
    console.print(
        f"{label}: expansion {rate(n, expansion):,.0f} recipients/s ({expansion:.2f} s, batch "
        f"p50 {ms(median(batch_times))} ms, p99 {ms(percentile(batch_times, 99))} ms); "
        f"delivery {rate(delivered, delivery):,.0f}/s ({delivery:.2f} s); bare writes "
        f"{rate(n, baseline):,.0f} (Core), {rate(n, driver):,.0f} (driver)"
        f"{'' if math.isnan(copy) else f', {rate(n, copy):,.0f} (COPY)'} recipients/s; "
        f"notifications by status {progress_now.statuses}")
    if profiler is not None:
        print_profile(profiler, bs.backend, expansion)


async def check_all_sent(store: SqlStore, report: Report) -> None:
    async with store.reader() as tx:
        conn: Any = tx.connection
        open_rows = int((await conn.execute(
            select(func.count()).select_from(deliveries)
            .where(deliveries.c.due_at.is_not(None), deliveries.c.due_at < FAR_FUTURE_MS)
        )).scalar_one())
    if open_rows:
        report.problems.append(f"{open_rows:,} deliveries of the broadcasts not done at the end")


# --- printing -------------------------------------------------------------------------------
def print_profile(profiler: cProfile.Profile, backend: str, wall: float) -> None:
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or math.nan

    def where(key: tuple[str, int, str]) -> str:
        path, _, name = key
        path = re.sub(r".*/site-packages/", "", path)
        path = re.sub(r".*/src/tidings/", "tidings/", path)
        path = re.sub(r".*/lib/python3[.\d]*/", "", path)
        return f"{path}:{name}"

    table = Table(title=f"{backend}: cProfile of round 1's expansion ({wall:.2f} s wall, "
                  f"{total:.2f} s profiled): top functions by own time")
    for col in ("file:function", "calls", "own s", "own %", "cumulative s", "cumulative %"):
        table.add_column(col, justify="left" if col == "file:function" else "right")
    ranked = sorted(entries.items(), key=lambda kv: -kv[1][2])
    for key, (_, calls, own, cumulative, _) in ranked[:30]:
        table.add_row(where(key), f"{calls:,}", f"{own:.3f}", f"{own / total:.1%}",
                      f"{cumulative:.3f}", f"{cumulative / total:.1%}")
    console.print(table)

    by_file: dict[str, float] = defaultdict(float)
    for key, value in entries.items():
        by_file[where(key).rsplit(":", 1)[0]] += value[2]
    table = Table(title=f"{backend}: own time by file")
    for col in ("file", "own s", "own %"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for path, own in sorted(by_file.items(), key=lambda kv: -kv[1])[:20]:
        table.add_row(path, f"{own:.3f}", f"{own / total:.1%}")
    console.print(table)

    table = Table(title=f"{backend}: the expansion's own code, cumulative time")
    for col in ("file:function", "calls", "cumulative s", "cumulative %"):
        table.add_column(col, justify="left" if col == "file:function" else "right")
    ours = [(k, v) for k, v in entries.items() if "tidings/" in k[0].replace("\\", "/")]
    for key, (_, calls, _, cumulative, _) in sorted(ours, key=lambda kv: -kv[1][3])[:25]:
        table.add_row(where(key), f"{calls:,}", f"{cumulative:.3f}", f"{cumulative / total:.1%}")
    console.print(table)


def print_report(report: Report, args: argparse.Namespace) -> None:
    n = report.users
    table = Table(title=f"{report.backend}: broadcast to {n:,} users (batch {args.batch}; "
                  f"setup {report.setup:.1f} s)")
    table.caption = ("expand: run_once() until 0; Core / driver: the same rows written bare, "
                     "one executemany per table per batch; done: create + expand + deliver")
    for col in ("round", "create ms", "expand s", "recip./s", "batch p50 ms", "batch p99 ms",
                "Core recip./s", "expand / Core", "driver recip./s", "expand / driver",
                "deliver s", "deliv./s", "done s"):
        table.add_column(col, justify="right")

    def row(label: str, create: float, exp: float, b: list[float], core: float, drv: float,
            dlv: float, dlv_rate: float, total: float) -> None:
        table.add_row(label, ms(create), secs(exp), per_s(rate(n, exp)), ms(median(b)),
                      ms(percentile(b, 99)), per_s(rate(n, core)), f"{ratio(core, exp):.2f}",
                      per_s(rate(n, drv)), f"{ratio(drv, exp):.2f}", secs(dlv),
                      per_s(dlv_rate), secs(total))

    for i, r in enumerate(report.rounds, 1):
        row(str(i), r.create, r.expansion, r.batches, r.baseline, r.driver, r.delivery,
            rate(r.delivered, r.delivery), r.total)
    if report.rounds:
        row("median", report.med("create"), report.med("expansion"),
            [t for r in report.rounds for t in r.batches], report.med("baseline"),
            report.med("driver"), report.med("delivery"),
            median([rate(r.delivered, r.delivery) for r in report.rounds]), report.med("total"))
    console.print(table)

    if report.statements:
        table = Table(title=f"{report.backend}: statements of round 1's expansion (driver call "
                      "to rows, as the event loop sees it)")
        for col in ("statement", "calls", "seconds", "share of the expansion",
                    "µs per recipient"):
            table.add_column(col, justify="left" if col == "statement" else "right")
        whole = report.first_expansion
        spent = 0.0
        for kind, (calls, seconds) in sorted(report.statements.items(), key=lambda kv: -kv[1][1]):
            spent += seconds
            table.add_row(kind, f"{int(calls):,}", f"{seconds:.3f}", f"{seconds / whole:.0%}",
                          f"{seconds / n * 1e6:.1f}")
        table.add_row("all statements", "", f"{spent:.3f}", f"{spent / whole:.0%}",
                      f"{spent / n * 1e6:.1f}")
        table.add_row("the rest (Python: planning, rows, SQLAlchemy)", "",
                      f"{whole - spent:.3f}", f"{(whole - spent) / whole:.0%}",
                      f"{(whole - spent) / n * 1e6:.1f}")
        console.print(table)

    if report.previews:
        table = Table(title=f"{report.backend}: segment preview, {args.requests} requests each "
                      f"after {args.warmup} (ms)")
        for col in ("filter", "matching users", "via", "count=true", "n", "p50", "p99", "max",
                    "p99 ≤ 50 ms"):
            table.add_column(col, justify="left" if col in ("filter", "via") else "right")
        for p in report.previews:
            p99 = percentile(p.times, 99)
            table.add_row(p.label, f"{p.matching:,}",
                          "GET /v1/users" if p.via == "HTTP" else "users.list/count",
                          "yes" if p.count else "no", str(len(p.times)), ms(median(p.times)),
                          ms(p99), ms(max(p.times)), verdict(p99 <= TARGET_PREVIEW_P99))
        console.print(table)
    for problem in report.problems:
        console.print(f"[red]{report.backend}: {problem}[/]")
    if not report.problems:
        console.print(f"{report.backend}: checked: every broadcast completed with all its "
                      "recipients, every delivery handled, preview pages and totals as expected")


def print_summary(reports: list[Report], args: argparse.Namespace) -> None:
    """One column per backend: the figures a release note quotes."""
    table = Table(title=f"summary: broadcast to {args.users:,} users, medians of "
                  f"{args.rounds} round(s)")
    table.add_column("measure", justify="left")
    for rep in reports:
        table.add_column(rep.backend, justify="right")
    table.add_column("target", justify="left")
    rows: list[tuple[str, list[str], str]] = []

    def add(label: str, cells: list[str], target: str = "") -> None:
        rows.append((label, cells, target))

    exp = [rate(r.users, r.med("expansion")) for r in reports]
    base = [rate(r.users, r.med("baseline")) for r in reports]
    batch_all = [[t for x in r.rounds for t in x.batches] for r in reports]
    http = [[percentile(p.times, 99) for p in r.previews if p.via == "HTTP"] for r in reports]
    worst = [max(h) if h else math.nan for h in http]
    add("expansion, recipients/s", [per_s(v) for v in exp],
        f"≥ {TARGET_RATE:,}/s: " + ", ".join(verdict(v >= TARGET_RATE) for v in exp))
    add(f"expansion batch of {args.batch}, p50 / p99 ms",
        [f"{ms(median(b))} / {ms(percentile(b, 99))}" for b in batch_all])
    driver = [rate(r.users, r.med("driver")) for r in reports]
    add("bare write of the same rows, SQLAlchemy Core executemany, recipients/s",
        [per_s(v) for v in base])
    add("  expansion / bare Core write", [f"{ratio(e, b):.2f}" for e, b in zip(exp, base, strict=True)])
    add("bare write of the same rows, driver executemany, recipients/s",
        [per_s(v) for v in driver])
    add("  expansion / bare driver write",
        [f"{ratio(e, b):.2f}" for e, b in zip(exp, driver, strict=True)])
    copied = [rate(r.users, r.med("copy")) for r in reports]
    if any(not math.isnan(v) for v in copied):
        add("bare write by COPY (counters by executemany), recipients/s",
            [per_s(v) for v in copied])
        add("  expansion / COPY write",
            [f"{ratio(e, b):.2f}" if not math.isnan(b) else "-"
             for e, b in zip(exp, copied, strict=True)])
    add("delivery, deliveries/s",
        [per_s(median([rate(x.delivered, x.delivery) for x in r.rounds])) for r in reports])
    add("create → all delivered, s (expansion, then delivery)",
        [secs(r.med("total")) for r in reports])
    add("create → all delivered, s (both workers at once)", [secs(r.together) for r in reports])
    add("  of which until the expansion ended, s",
        [secs(r.together_expanded) for r in reports])
    add("segment preview p99 ms, worst of GET /v1/users",
        [ms(w) for w in worst],
        f"≤ {TARGET_PREVIEW_P99 * 1000:.0f} ms: "
        + ", ".join(verdict(w <= TARGET_PREVIEW_P99) if not math.isnan(w) else "-"
                    for w in worst))
    add("problems found by the checks", [str(len(r.problems)) for r in reports])
    for label, cells, target in rows:
        table.add_row(label, *cells, target)
    console.print(table)


# --- main -----------------------------------------------------------------------------------
async def main(args: argparse.Namespace) -> None:
    # Stopped from outside, it still drops its schema and removes its folder on the way out.
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tidings").setLevel(logging.WARNING)  # the log provider writes nothing
    console.print(f"[bold]bench/broadcast.py[/]: {args.users:,} users, {args.rounds} round(s), "
                  f"broadcast batch {args.batch}, worker batch {args.worker_batch} in "
                  f"{args.lanes} lanes, backends {', '.join(args.only)}")
    check_quiet()
    reports = []
    for backend in args.only:
        if backend == "postgres":
            reason = postgres_unreachable(args.postgres_url)
            if reason is not None:
                console.print(f"[yellow]postgres skipped:[/] {reason}")
                continue
        report = await run_backend(backend, args)
        print_report(report, args)
        reports.append(report)
    if reports:
        print_summary(reports, args)


def parse() -> argparse.Namespace:
    defaults = Settings.model_fields
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=100_000, help="the topic's subscribers")
    p.add_argument("--only", default="sqlite,postgres",
                   help="backends, comma-separated: sqlite, postgres")
    p.add_argument("--rounds", type=int, default=3,
                   help="broadcasts, each to a fresh topic; medians are printed")
    p.add_argument("--batch", type=int, default=defaults["broadcast_batch_size"].default,
                   help="recipients per expansion batch (TIDINGS_BROADCAST_BATCH_SIZE), and "
                   "the baseline's")
    p.add_argument("--worker-batch", type=int, default=defaults["worker_batch_size"].default,
                   help="deliveries per round of the delivery worker")
    p.add_argument("--lanes", type=int, default=defaults["worker_lanes"].default,
                   help="the delivery worker's lanes")
    p.add_argument("--requests", type=int, default=500, help="timed requests per preview case")
    p.add_argument("--warmup", type=int, default=50, help="untimed requests before those")
    p.add_argument("--preview-budget", type=float, default=60.0,
                   help="seconds of timed requests per preview case at most")
    p.add_argument("--chunk", type=int, default=5000, help="users per setup transaction")
    p.add_argument("--no-together", action="store_true",
                   help="skip the run with the expansion and the delivery worker at once")
    p.add_argument("--no-vacuum", action="store_true",
                   help="PostgreSQL: no VACUUM ANALYZE before the timed phases (with autovacuum "
                   "off, dead rows then pile up from round to round)")
    p.add_argument("--profile", action="store_true",
                   help="cProfile round 1's expansion (by function and by file)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--postgres-url", default=POSTGRES_URL)
    args = p.parse_args()
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(only) - {"sqlite", "postgres"})
    if unknown or not only:
        p.error(f"--only: unknown backend(s) {', '.join(unknown) or '(none given)'}; "
                "use sqlite, postgres or both")
    args.only = list(dict.fromkeys(only))
    for name, low in (("users", 1), ("rounds", 1), ("requests", 1), ("warmup", 0),
                      ("chunk", 1), ("preview_budget", 1)):
        if getattr(args, name) < low:
            p.error(f"--{name.replace('_', '-')} must be at least {low}")
    for name, setting in (("batch", "broadcast_batch_size"), ("worker_batch", "worker_batch_size"),
                          ("lanes", "worker_lanes")):
        limits = defaults[setting].metadata
        low = next((m.ge for m in limits if hasattr(m, "ge")), 1)
        high = next((m.le for m in limits if hasattr(m, "le")), math.inf)
        if not low <= getattr(args, name) <= high:
            p.error(f"--{name.replace('_', '-')} must be between {low} and {high} "
                    f"(TIDINGS_{setting.upper()})")
    return args


if __name__ == "__main__":
    try:
        asyncio.run(main(parse()))
    except asyncio.CancelledError:
        console.print("[yellow]stopped (SIGTERM); the bench's schema and folder are removed[/]")
        raise SystemExit(143) from None
