"""The inbox at the store layer (no HTTP): first page, deep cursor page and read-all, on SQLite
and PostgreSQL, over a large table.

    .venv/bin/python bench/inbox_store.py [--backend sqlite|postgres|both]
        [--notifications 1000000] [--users 10000] [--samples 2000]

The `notifications` table is filled with bulk SQLAlchemy Core inserts (ids from UlidFactory in
time order, about half unread, channel_mask push=1 | in_app=2), with the delivery rows a real
send leaves (one in-app delivery each, plus one push delivery where the push bit is set) unless
--no-delivery-rows. A few "heavy" users have --heavy-unread unread notifications each; the rest
of the users share the rest. Then, through the service that the HTTP API uses
(`Inbox.page`, which loads each page's deliveries, and `Inbox.read_all`):

(a) the first page (50) + unread count of a random ordinary user: target p99 ≤ 1 ms
(b) a deep page, the cursor at the user's 51st-oldest notification, + unread count: p99 ≤ 1 ms
(c) read-all for a user with --heavy-unread (10,000) unread notifications: ≤ 50 ms

and, to show where the time goes: each query of the page timed apart, the same SQL through the
bare driver and (SQLite) through the stdlib sqlite3 module or (PostgreSQL) as the server's own
execution time, and the query plans. Nothing asserts a timing: the figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import math
import pstats
import random
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from _common import (
    ADMIN_KEY,
    SECRET_KEY,
    BenchStore,
    backends,
    bench_store,
    check_quiet,
    console,
    median,
    ms,
    percentile,
    pg_execute,
    progress,
    verdict,
)
from rich.table import Table
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.engine import Engine

from tidings.adapters.store.sql import counters
from tidings.adapters.store.sql.rows import delivery_from, notification_from
from tidings.adapters.store.sql.schema import deliveries, notifications
from tidings.bootstrap import build
from tidings.domain.ids import UlidFactory
from tidings.domain.pagination import encode_cursor
from tidings.ports import InboxQuery
from tidings.service.apps import AppChanges
from tidings.settings import Settings

APP = "bench"
PAGE = 50
TARGET_PAGE_P99 = 0.001
TARGET_READ_ALL = 0.050
DAY_MS = 86_400_000
CHANNELS = {3: ["push", "in_app"], 2: ["in_app"]}


# --- the data ---------------------------------------------------------------------------------
@dataclass
class Plan:
    notifications: int
    users: int
    heavy: int
    heavy_unread: int
    delivery_rows: bool
    seed: int

    @property
    def ordinary(self) -> int:
        return self.users - self.heavy

    def user_name(self, index: int) -> str:
        if index < self.ordinary:
            return f"user-{index:05d}"
        return f"heavy-{index - self.ordinary}"

    def chunks(self, size: int) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        """Rows in id (= time) order, `size` notifications at a time, with their deliveries."""
        rng = random.Random(self.seed)
        owners = [rng.randrange(self.ordinary)
                  for _ in range(self.notifications - self.heavy * self.heavy_unread)]
        owners += [self.ordinary + h for h in range(self.heavy) for _ in range(self.heavy_unread)]
        rng.shuffle(owners)
        names = [self.user_name(i) for i in range(self.users)]
        devices = [f"01JDEVICE{i:017d}" for i in range(self.users)]
        ulids = UlidFactory()
        step = max(1, 30 * DAY_MS // max(self.notifications, 1))
        start = int(time.time() * 1000) - step * self.notifications - DAY_MS
        notes: list[dict[str, Any]] = []
        sends: list[dict[str, Any]] = []
        for i, owner in enumerate(owners):
            at = start + i * step
            uid = names[owner]
            heavy = owner >= self.ordinary
            mask = 3 if heavy or rng.random() < 0.7 else 2
            nid = ulids.new(at)
            notes.append({
                "id": nid, "app_id": APP, "user_id": uid, "to_address": None,
                "recipient": {"user_id": uid}, "channels": CHANNELS[mask], "channel_mask": mask,
                "title": "Your order has shipped", "body": f"Order {i} arrives on Tuesday",
                "data": {"order": str(i)}, "category": "orders", "created_at": at,
                "send_at": None, "status": "sent",
                "read_at": None if heavy or rng.random() < 0.5 else at + 60_000,
                "sender_id": None, "ttl": None, "priority": "normal",
            })
            if self.delivery_rows:
                if mask & 1:
                    sends.append({
                        "id": ulids.new(at), "notification_id": nid, "app_id": APP,
                        "user_id": uid, "channel": "push", "provider": "log",
                        "target": devices[owner], "status": "sent", "attempts": 1, "error": None,
                        "provider_message_id": ulids.new(at), "created_at": at,
                        "updated_at": at + 40, "due_at": None, "lease_id": None})
                sends.append({
                    "id": ulids.new(at), "notification_id": nid, "app_id": APP, "user_id": uid,
                    "channel": "in_app", "provider": "inbox", "target": uid, "status": "sent",
                    "attempts": 0, "error": None, "provider_message_id": None,
                    "created_at": at, "updated_at": at, "due_at": None, "lease_id": None})
            if len(notes) >= size:
                yield notes, sends
                notes, sends = [], []
        if notes:
            yield notes, sends


async def load(bs: BenchStore, plan: Plan, analyze_sqlite: bool) -> tuple[float, int]:
    """Bulk insert; returns (seconds, delivery rows)."""
    started = time.perf_counter()
    delivery_rows = 0
    with progress() as bar:
        task = bar.add_task(f"{bs.backend}: inserting notifications", total=plan.notifications)
        for notes, sends in plan.chunks(5000):
            async with bs.store.transaction() as tx:
                await tx.connection.execute(insert(notifications), notes)  # type: ignore[attr-defined]
                if sends:
                    await tx.connection.execute(insert(deliveries), sends)  # type: ignore[attr-defined]
                # The store keeps exact unread counters beside the rows (as add_many does).
                for app_id in {n["app_id"] for n in notes}:
                    await counters.apply(tx.connection, counters.deltas(  # type: ignore[attr-defined]
                        app_id, [(n["user_id"], n["channel_mask"]) for n in notes
                                 if n["app_id"] == app_id and n["read_at"] is None], +1))
            delivery_rows += len(sends)
            bar.advance(task, len(notes))
    if bs.schema is not None:
        # What autovacuum would have done by the time such a table is read.
        await pg_execute(bs.url, bs.schema, "VACUUM ANALYZE notifications", "VACUUM ANALYZE deliveries")
    elif analyze_sqlite:
        async with bs.store.transaction() as tx:
            await tx.connection.execute(text("ANALYZE"))  # type: ignore[attr-defined]
    return time.perf_counter() - started, delivery_rows


# --- measuring --------------------------------------------------------------------------------
class GcWatch:
    """Collections of the cyclic garbage collector meanwhile, and the time they took."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.longest = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            took = time.perf_counter() - self._started
            self.count += 1
            self.seconds += took
            self.longest = max(self.longest, took)

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._callback)


@dataclass
class Result:
    label: str
    times: list[float] = field(default_factory=list)
    note: str = ""
    gc: GcWatch | None = None

    @property
    def p50(self) -> float:
        return percentile(self.times, 50)

    @property
    def p99(self) -> float:
        return percentile(self.times, 99)


async def timed(label: str, calls: list[Callable[[], Awaitable[object]]], note: str = "") -> Result:
    result = Result(label, note=note)
    with progress() as bar, GcWatch() as watch:
        task = bar.add_task(label, total=len(calls))
        for call in calls:
            started = time.perf_counter()
            await call()
            result.times.append(time.perf_counter() - started)
            bar.advance(task)
    result.gc = watch
    return result


@contextmanager
def captured_sql() -> Iterator[list[tuple[str, Any]]]:
    """The statements and parameters sent to the driver meanwhile."""
    seen: list[tuple[str, Any]] = []

    def listener(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                 executemany: bool) -> None:
        seen.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", listener)


def short_sql(statement: str) -> str:
    text = re.sub(r"\s+", " ", statement)
    text = re.sub(r"SELECT (notifications|deliveries)\.id, .*? FROM", r"SELECT \1.* FROM", text)
    text = re.sub(r"\((\?|\$\d+(::\w+)?)(, (\?|\$\d+(::\w+)?)){3,}\)", "(…)", text)
    text = re.sub(r"IN \(__\[POSTCOMPILE_\w+\]\)", "IN (…)", text)
    return text if len(text) < 140 else text[:137] + "…"


def clip(line: str) -> str:
    """One console line: plans and statements are cut rather than wrapped."""
    width = console.width - 6
    return line if len(line) <= width else line[: width - 1] + "…"


async def explain(bs: BenchStore, statement: str, params: Any, analyze: bool) -> list[str]:
    async with bs.store.reader() as tx:
        conn = tx.connection  # type: ignore[attr-defined]
        if bs.backend == "sqlite":
            # The SQLite store runs statements inline on sqlite3: ask sqlite3 itself.
            assert bs.sqlite_path is not None
            db = sqlite3.connect(bs.sqlite_path)
            try:
                rows = db.execute("EXPLAIN QUERY PLAN " + statement, params).fetchall()
            finally:
                db.close()
            return [f"{'  ' * (r[1] > 0)}{r[3]}" for r in rows]
        prefix = "EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN "
        rows = await conn.exec_driver_sql(prefix + statement, params)
        return [r[0] for r in rows]


async def driver_times(bs: BenchStore, statements: list[tuple[str, Any]], reps: int) -> list[float]:
    """Median seconds of each statement through the bare driver (no SQLAlchemy). The SQLite
    store's driver is the stdlib sqlite3 module, run inline."""
    if bs.backend == "sqlite":
        return sqlite_engine_times(bs, statements, reps)
    out = []
    async with bs.store.reader() as tx:
        raw = await tx.connection.get_raw_connection()  # type: ignore[attr-defined]
        driver = raw.driver_connection
        for statement, params in statements:
            times = []
            for _ in range(reps):
                started = time.perf_counter()
                if bs.backend == "sqlite":
                    cursor = await driver.execute(statement, params)
                    await cursor.fetchall()
                    await cursor.close()
                else:
                    await driver.fetch(statement, *params)
                times.append(time.perf_counter() - started)
            out.append(median(times))
    return out


def sqlite_engine_times(bs: BenchStore, statements: list[tuple[str, Any]], reps: int) -> list[float]:
    """Median seconds of each statement in SQLite itself (stdlib sqlite3, no thread hop)."""
    assert bs.sqlite_path is not None
    db = sqlite3.connect(bs.sqlite_path)
    try:
        out = []
        for statement, params in statements:
            times = []
            for _ in range(reps):
                started = time.perf_counter()
                db.execute(statement, params).fetchall()
                times.append(time.perf_counter() - started)
            out.append(median(times))
        return out
    finally:
        db.close()


def pg_execution_ms(plan: list[str]) -> float:
    for line in plan:
        m = re.search(r"Execution Time: ([\d.]+) ms", line)
        if m:
            return float(m.group(1)) / 1000
    return math.nan


@dataclass
class Report:
    backend: str
    load_seconds: float = 0.0
    delivery_rows: int = 0
    results: list[Result] = field(default_factory=list)
    read_all: Result | None = None
    read_all_counts: list[int] = field(default_factory=list)

    def get(self, label: str) -> Result:
        return next(r for r in self.results if r.label.startswith(label))


async def run_backend(backend: str, args: argparse.Namespace, plan: Plan) -> Report:
    report = Report(backend)
    async with bench_store(backend, "bench_inbox", postgres_url=args.postgres_url) as bs:
        settings = Settings(database_url=bs.url, secret_key=SECRET_KEY, admin_key=ADMIN_KEY)
        container = build(settings, store=bs.store)
        await container.prepare()
        await container.apps.put(APP, AppChanges(name="Bench"))
        report.load_seconds, report.delivery_rows = await load(bs, plan, args.analyze_sqlite)
        console.print(f"[bold]{backend}[/]: {plan.notifications:,} notifications, "
                      f"{report.delivery_rows:,} delivery rows, {plan.users:,} users "
                      f"({plan.heavy} with {plan.heavy_unread:,} unread each) loaded in "
                      f"{report.load_seconds:.1f} s")
        store, inbox = bs.store, container.inbox
        rng = random.Random(plan.seed + 1)

        # Ordinary users with more than one page, and the cursor at their 51st-oldest.
        pool = rng.sample(range(plan.ordinary), min(plan.ordinary, 400))
        deep: dict[str, str] = {}
        async with store.reader() as tx:
            conn = tx.connection  # type: ignore[attr-defined]
            for index in pool:
                uid = plan.user_name(index)
                row = (await conn.execute(
                    select(notifications.c.id)
                    .where(notifications.c.app_id == APP, notifications.c.user_id == uid)
                    .order_by(notifications.c.id).offset(PAGE).limit(1))).first()
                if row is not None:
                    deep[uid] = row.id
            heavy_uid = plan.user_name(plan.ordinary)
            heavy_row = (await conn.execute(
                select(notifications.c.id)
                .where(notifications.c.app_id == APP, notifications.c.user_id == heavy_uid)
                .order_by(notifications.c.id).offset(PAGE).limit(1))).first()
            ordinary_count = (await conn.execute(
                select(func.count()).select_from(notifications)
                .where(notifications.c.app_id == APP,
                       notifications.c.user_id == plan.user_name(pool[0])))).scalar_one()
        console.print(f"{backend}: e.g. {plan.user_name(pool[0])} has {ordinary_count} "
                      f"notifications; {len(deep)} of {len(pool)} sampled users have more than "
                      f"{PAGE}")
        if not deep:
            raise SystemExit("no ordinary user has more than one page: raise --notifications "
                             "or lower --users")
        deep_users = list(deep)
        n = args.samples
        first_users = [plan.user_name(rng.randrange(plan.ordinary)) for _ in range(n)]
        deep_picks = [rng.choice(deep_users) for _ in range(n)]

        def page(uid: str, cursor: str | None = None) -> Callable[[], Awaitable[object]]:
            return lambda: inbox.page(APP, uid, limit=PAGE, cursor=cursor)

        await timed("warm-up", [page(u) for u in first_users[: min(n, 300)]])
        report.results.append(await timed(
            "(a) first page + unread count", [page(u) for u in first_users],
            f"random ordinary users (~{plan.notifications // plan.users} notifications each)"))
        report.results.append(await timed(
            "(b) deep page + unread count",
            [page(u, encode_cursor(deep[u])) for u in deep_picks],
            "cursor at the user's 51st-oldest: the page holds the 50 oldest"))
        heavy_n = max(50, n // 4)
        report.results.append(await timed(
            "(a') first page, heavy user", [page(heavy_uid)] * heavy_n,
            f"{plan.heavy_unread:,} notifications, all unread"))
        if heavy_row is not None:
            report.results.append(await timed(
                "(b') deep page, heavy user", [page(heavy_uid, encode_cursor(heavy_row.id))] * heavy_n,
                f"cursor {plan.heavy_unread - PAGE - 1:,} notifications deep"))

        # Where the time of (a) and (b) goes: each repository call inside one reader, then the
        # page's two selects again through SQLAlchemy alone, and the rows turned into domain
        # objects apart.
        parts: dict[str, list[float]] = {k: [] for k in (
            "reader() open + close", "inbox select (rows → Notification)",
            "_attach (deliveries of the page)", "unread_count",
            "SQLAlchemy execute+fetch, page rows", "notification_from per row",
            "SQLAlchemy execute+fetch, deliveries", "delivery_from per row")}
        n_cols = notifications.c
        with GcWatch() as watch:
            for uid, cursor in [(u, None) for u in first_users[: n // 2]] + \
                               [(u, deep[u]) for u in deep_picks[: n // 2]]:
                query = InboxQuery(before_id=cursor)
                stmt = select(notifications).where(n_cols.app_id == APP, n_cols.user_id == uid)
                if cursor is not None:
                    stmt = stmt.where(n_cols.id < cursor)
                stmt = stmt.order_by(n_cols.id.desc()).limit(PAGE + 1)
                t0 = time.perf_counter()
                async with store.reader() as tx:
                    t1 = time.perf_counter()
                    items = await tx.notifications.inbox(APP, uid, query, PAGE + 1, False)
                    t2 = time.perf_counter()
                    await tx.notifications._attach(items)  # type: ignore[attr-defined]
                    t3 = time.perf_counter()
                    await tx.notifications.unread_count(APP, uid, None)
                    t4 = time.perf_counter()
                    conn = tx.connection  # type: ignore[attr-defined]
                    rows = (await conn.execute(stmt)).all()
                    t5 = time.perf_counter()
                    for r in rows:
                        notification_from(r)
                    t6 = time.perf_counter()
                    drows = (await conn.execute(
                        select(deliveries).where(deliveries.c.notification_id.in_([r.id for r in rows]))
                        .order_by(deliveries.c.id))).all()
                    t7 = time.perf_counter()
                    for r in drows:
                        delivery_from(r)
                    t8 = time.perf_counter()
                t9 = time.perf_counter()
                for label, took in zip(parts, ((t1 - t0) + (t9 - t8), t2 - t1, t3 - t2, t4 - t3,
                                               t5 - t4, t6 - t5, t7 - t6, t8 - t7), strict=True):
                    parts[label].append(took)
        for label, times in parts.items():
            report.results.append(Result(f"  part: {label}", times, "(a)+(b) mixed", watch))

        # The SQL of one (a) and one (b), and of the heavy user's first page.
        samples = {"(a)": (first_users[0], None), "(b)": (deep_picks[0], deep[deep_picks[0]]),
                   "(a')": (heavy_uid, None)}
        sql: dict[str, list[tuple[str, Any]]] = {}
        for key, (uid, cursor) in samples.items():
            with captured_sql() as seen:
                await inbox.page(APP, uid, limit=PAGE,
                                 cursor=encode_cursor(cursor) if cursor else None)
            sql[key] = [(s, p) for s, p in seen if s.lstrip().upper().startswith("SELECT")]

        table = Table(title=f"{backend}: each statement of one page, medians of {args.sql_reps}")
        for col in ("page", "statement", "bare driver ms",
                    "sqlite3 (in process) ms" if backend == "sqlite" else "server execution ms"):
            table.add_column(col, justify="left" if col in ("page", "statement") else "right")
        plans: list[tuple[str, str, list[str]]] = []
        for key, statements in sql.items():
            through_driver = await driver_times(bs, statements, args.sql_reps)
            if backend == "sqlite":
                inside = sqlite_engine_times(bs, statements, args.sql_reps)
            else:
                inside = []
                for statement, params in statements:
                    runs = [pg_execution_ms(await explain(bs, statement, params, True))
                            for _ in range(min(args.sql_reps, 30))]
                    inside.append(median(runs))
            for (statement, params), d, e in zip(statements, through_driver, inside, strict=True):
                table.add_row(key, short_sql(statement), ms(d), ms(e))
                plans.append((key, short_sql(statement),
                              await explain(bs, statement, params, backend == "postgres")))
        console.print(table)
        for key, statement, lines in plans:
            console.print(f"[bold]{backend} plan {key}[/] {clip(statement)}")
            for line in lines:
                console.print(f"    {clip(line)}", highlight=False, markup=False)
        used = " ".join(line for _, _, lines in plans for line in lines)
        for index_name in ("ix_notifications_inbox", "ix_notifications_unread",
                           "ix_deliveries_notification"):
            console.print(f"{backend}: {index_name} used: "
                          f"{'[green]yes[/]' if index_name in used else '[red]no[/]'}")

        if args.profile:
            profiler = cProfile.Profile()
            calls = [page(u) for u in first_users[: min(n, 500)]]
            profiler.enable()
            for call in calls:
                await call()
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(25)
            console.print(f"[bold]{backend}: cProfile of {len(calls)} first pages "
                          f"(main thread only), by own time[/]")
            console.print(out.getvalue(), highlight=False, markup=False)

        # (c) read-all, each time for a heavy user not read before.
        rest = [plan.user_name(plan.ordinary + h) for h in range(plan.heavy)]
        report.read_all = Result("(c) read_all, 10,000 unread" if plan.heavy_unread == 10_000
                                 else f"(c) read_all, {plan.heavy_unread:,} unread",
                                 note=f"{len(rest)} users, one call each")
        for i, uid in enumerate(rest):
            with captured_sql() as seen:
                started = time.perf_counter()
                count = await inbox.read_all(APP, uid)
                report.read_all.times.append(time.perf_counter() - started)
            report.read_all_counts.append(count)
            if i == 0:
                update = [(s, p) for s, p in seen if s.lstrip().upper().startswith("UPDATE")]
                for statement, params in update:
                    console.print(f"[bold]{backend} plan (c)[/] {clip(short_sql(statement))}")
                    for line in await explain(bs, statement, params, False):
                        console.print(f"    {clip(line)}", highlight=False, markup=False)
    return report


def print_report(report: Report) -> None:
    table = Table(title=f"{report.backend}: inbox at the store layer (times in ms)")
    for col in ("measurement", "n", "p50", "p99", "max", "target", "GC runs / ms / longest",
                "note"):
        table.add_column(col, justify="left" if col in ("measurement", "note", "target") else "right")
    for r in report.results:
        if not r.times:
            continue
        target = ""
        if r.label.startswith(("(a)", "(b)")):
            target = f"p99 ≤ 1 ms: {verdict(r.p99 <= TARGET_PAGE_P99)}"
        collected = ""
        if r.gc is not None and not r.label.startswith("  part:"):
            collected = f"{r.gc.count} / {r.gc.seconds * 1000:.1f} / {r.gc.longest * 1000:.2f}"
        table.add_row(r.label, str(len(r.times)), ms(r.p50), ms(r.p99), ms(max(r.times)),
                      target, collected, r.note)
    if report.read_all is not None and report.read_all.times:
        r = report.read_all
        table.add_row(r.label, str(len(r.times)), ms(r.p50), ms(r.p99), ms(max(r.times)),
                      f"≤ 50 ms: {verdict(r.p50 <= TARGET_READ_ALL)} (median)", "",
                      f"{r.note}; updated {', '.join(map(str, report.read_all_counts))}")
    console.print(table)


async def main(args: argparse.Namespace) -> None:
    heavy = max(1, args.read_all_reps)
    heavy_unread = args.heavy_unread
    if heavy * heavy_unread > args.notifications // 2:
        heavy_unread = max(PAGE + 2, args.notifications // 2 // heavy)
        console.print(f"[yellow]--heavy-unread lowered to {heavy_unread:,} to fit "
                      f"{args.notifications:,} notifications[/]")
    if args.users <= heavy:
        raise SystemExit("--users must exceed --read-all-reps")
    plan = Plan(args.notifications, args.users, heavy, heavy_unread, not args.no_delivery_rows,
                args.seed)
    check_quiet()
    reports = []
    for backend in backends(args.backend):
        report = await run_backend(backend, args, plan)
        print_report(report)
        reports.append(report)
    if len(reports) > 1:
        table = Table(title="summary (ms)")
        for col in ("backend", "(a) p50", "(a) p99", "(b) p50", "(b) p99", "(c) median"):
            table.add_column(col, justify="right")
        for rep in reports:
            a, b = rep.get("(a)"), rep.get("(b)")
            c = rep.read_all.p50 if rep.read_all else math.nan
            table.add_row(rep.backend, ms(a.p50), ms(a.p99), ms(b.p50), ms(b.p99), ms(c))
        console.print(table)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--notifications", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--samples", type=int, default=2000, help="pages timed for (a) and for (b)")
    p.add_argument("--heavy-unread", type=int, default=10_000,
                   help="unread notifications of each heavy user (the read-all case)")
    p.add_argument("--read-all-reps", type=int, default=5,
                   help="heavy users, each read once with read_all (after the first one's "
                   "pages (a') and (b') are timed)")
    p.add_argument("--no-delivery-rows", action="store_true",
                   help="leave the deliveries table empty (pages then attach no deliveries)")
    p.add_argument("--analyze-sqlite", action="store_true",
                   help="run ANALYZE on SQLite after loading (Tidings itself never does)")
    p.add_argument("--sql-reps", type=int, default=200, help="runs of each statement timed apart")
    p.add_argument("--profile", action="store_true", help="print a cProfile of 500 first pages")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--postgres-url", default=None)
    p.add_argument("--uvloop", action="store_true",
                   help="run on uvloop (tidings serve and worker run on the asyncio loop)")
    args = p.parse_args()
    if args.postgres_url is None:
        from _common import POSTGRES_URL
        args.postgres_url = POSTGRES_URL
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.uvloop:
        import uvloop
        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))
