"""The delivery engine's throughput against a bare SQL loop doing the least any engine must do
with the same rows, on the same kind of store, in the same run.

    .venv/bin/python bench/engine.py [--backend sqlite|postgres|both] [--deliveries 20000]
        [--batch 500] [--rounds 3]

Each round pre-inserts (bulk Core inserts, not timed) --deliveries notifications, each with one
pending push delivery to one of --devices devices, then times `container.dispatcher.run_once()`
until the queue is empty: claim under a lease, hand the batch to the `log` provider (its
logger silenced), record the outcomes and the notifications' status. Deliveries per second.

Baseline, same round, same store: the same number of delivery rows inserted in batches of
--batch (one transaction each), then updated to `sent` in batches (executemany UPDATE by id, one
transaction each). Rows per second over both phases. Ratio engine / baseline (target ≥ 0.5).
Nothing asserts a timing: the figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import io
import logging
import math
import pstats
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
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
    progress,
    ratio,
    verdict,
)
from rich.table import Table
from sqlalchemy import bindparam, event, func, insert, select, update
from sqlalchemy.engine import Engine

from tidings.adapters.store.sql.queue import SqlQueue
from tidings.adapters.store.sql.schema import deliveries, devices, notifications
from tidings.bootstrap import build
from tidings.domain.ids import UlidFactory
from tidings.service.apps import AppChanges
from tidings.settings import Settings

APP = "bench"
TARGET = 0.5
ulids = UlidFactory()

# --- time spent inside the queue's two statements groups (wrapped here, not in src) ---------
phase_seconds: dict[str, float] = defaultdict(float)


def _timed(name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        finally:
            phase_seconds[name] += time.perf_counter() - started
    return wrapper


SqlQueue.claim = _timed("claim", SqlQueue.claim)  # type: ignore[method-assign]
SqlQueue.record = _timed("record", SqlQueue.record)  # type: ignore[method-assign]

# --- time of each kind of statement, from the driver call to its rows, while `watching` -------
sql_seconds: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
watching = False


def statement_kind(statement: str) -> str:
    text = re.sub(r"\s+", " ", statement).strip()
    m = re.match(r"(SELECT|UPDATE|INSERT INTO|DELETE FROM) (\w+)", text)
    if m is None:
        return text[:40]
    verb, name = m.groups()
    if verb == "SELECT":
        m2 = re.search(r" FROM (\w+)", text)
        columns = text[7:text.index(" FROM ")] if " FROM " in text else ""
        first = columns.split(",")[0].split(".")[-1]
        return f"SELECT {first}, … FROM {m2.group(1) if m2 else '?'}"
    if verb == "UPDATE":
        m2 = re.search(r" SET (\w+)", text)
        return (f"UPDATE {name} SET {m2.group(1) if m2 else '?'}, …"
                + (" RETURNING" if " RETURNING " in text else ""))
    return f"{verb} {name}"


@event.listens_for(Engine, "before_cursor_execute")
def _before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
            executemany: bool) -> None:
    conn.info.setdefault("bench_started", []).append(time.perf_counter())


@event.listens_for(Engine, "after_cursor_execute")
def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
           executemany: bool) -> None:
    started = conn.info["bench_started"].pop()
    if watching:
        entry = sql_seconds[statement_kind(statement) + (" (executemany)" if executemany else "")]
        entry[0] += 1
        entry[1] += time.perf_counter() - started


def now_ms() -> int:
    return int(time.time() * 1000)


def delivery_row(notification_id: str, device_id: str, user_id: str, at: int) -> dict[str, Any]:
    return {"id": ulids.new(at), "notification_id": notification_id, "app_id": APP,
            "user_id": user_id, "channel": "push", "provider": "log", "target": device_id,
            "status": "pending", "attempts": 0, "error": None, "provider_message_id": None,
            "created_at": at, "updated_at": at, "due_at": at, "lease_id": None}


async def add_devices(bs: BenchStore, count: int) -> list[tuple[str, str]]:
    """(device id, user id) of `count` enabled Android devices, one user each."""
    at = now_ms()
    rows = []
    for i in range(count):
        token = f"bench-fcm-token-{i:08d}"
        rows.append({"id": ulids.new(at), "app_id": APP, "user_id": f"user-{i:05d}",
                     "platform": "android", "token": token,
                     "token_key": hashlib.sha256(token.encode()).hexdigest(), "provider": None,
                     "enabled": True, "disabled_reason": None, "device_info": None,
                     "app_version": None, "created_at": at, "last_seen_at": at})
    async with bs.store.transaction() as tx:
        await tx.connection.execute(insert(devices), rows)  # type: ignore[attr-defined]
    return [(r["id"], r["user_id"]) for r in rows]


async def prefill(bs: BenchStore, count: int, targets: list[tuple[str, str]]) -> list[str]:
    """`count` queued notifications, each with one due push delivery; returns their ids."""
    at = now_ms() - 1000
    ids = []
    for start in range(0, count, 5000):
        notes, sends = [], []
        for i in range(start, min(count, start + 5000)):
            device_id, user_id = targets[i % len(targets)]
            nid = ulids.new(at)
            ids.append(nid)
            notes.append({
                "id": nid, "app_id": APP, "user_id": user_id, "to_address": None,
                "recipient": {"user_id": user_id}, "channels": ["push"], "channel_mask": 1,
                "title": "Your order has shipped", "body": f"Order {i} arrives on Tuesday",
                "data": {"order": str(i)}, "category": None, "created_at": at, "send_at": None,
                "status": "queued", "read_at": None, "sender_id": None, "ttl": None,
                "priority": "normal"})
            sends.append(delivery_row(nid, device_id, user_id, at))
        async with bs.store.transaction() as tx:
            await tx.connection.execute(insert(notifications), notes)  # type: ignore[attr-defined]
            await tx.connection.execute(insert(deliveries), sends)  # type: ignore[attr-defined]
    return ids


_MARK_SENT = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"))
    .values(status=bindparam("b_status"), provider_message_id=bindparam("b_mid"),
            updated_at=bindparam("b_at"), due_at=None, lease_id=None)
)


async def baseline(bs: BenchStore, note_ids: list[str], targets: list[tuple[str, str]],
                   batch: int) -> tuple[float, float]:
    """Insert len(note_ids) delivery rows in batches, then mark them sent in batches;
    returns (insert seconds, update seconds)."""
    at = now_ms()
    rows = [delivery_row(nid, *targets[i % len(targets)], at) for i, nid in enumerate(note_ids)]
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        async with bs.store.transaction() as tx:
            await tx.connection.execute(insert(deliveries), rows[i:i + batch])  # type: ignore[attr-defined]
    inserted = time.perf_counter()
    for i in range(0, len(rows), batch):
        at = now_ms()
        async with bs.store.transaction() as tx:
            await tx.connection.execute(_MARK_SENT, [  # type: ignore[attr-defined]
                {"b_id": r["id"], "b_status": "sent", "b_mid": ulids.new(at), "b_at": at}
                for r in rows[i:i + batch]])
    return inserted - started, time.perf_counter() - inserted


async def counts(bs: BenchStore) -> tuple[dict[str, int], int]:
    async with bs.store.reader() as tx:
        conn = tx.connection  # type: ignore[attr-defined]
        by_status = {r[0]: r[1] for r in await conn.execute(
            select(deliveries.c.status, func.count()).group_by(deliveries.c.status))}
        queued = (await conn.execute(select(func.count()).select_from(notifications)
                                     .where(notifications.c.status == "queued"))).scalar_one()
    return by_status, int(queued)


async def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    global watching
    async with bench_store(backend, "bench_engine", postgres_url=args.postgres_url) as bs:
        settings = Settings(database_url=bs.url, secret_key=SECRET_KEY, admin_key=ADMIN_KEY,
                            worker_batch_size=args.batch)
        container = build(settings, store=bs.store)
        await container.prepare()
        await container.apps.put(APP, AppChanges(name="Bench"))
        targets = await add_devices(bs, args.devices)
        dispatcher = container.dispatcher
        engine_rates, base_rates, ins_rates, upd_rates = [], [], [], []
        phases: list[dict[str, float]] = []
        k = args.deliveries
        for round_no in range(args.rounds):
            note_ids = await prefill(bs, k, targets)
            phase_seconds.clear()
            sql_seconds.clear()
            handled = 0
            limit = math.ceil(k / args.batch) * 3 + 10  # bounded, whatever happens
            profiler = cProfile.Profile() if args.profile and round_no == 0 else None
            with progress() as bar:
                task = bar.add_task(f"{backend} round {round_no + 1}: engine", total=k)
                if profiler is not None:
                    profiler.enable()
                watching = True
                started = time.perf_counter()
                try:
                    for _ in range(limit):
                        n = await dispatcher.run_once()
                        handled += n
                        bar.advance(task, n)
                        if n == 0 or handled >= k:
                            break
                finally:
                    took = time.perf_counter() - started
                    watching = False
                if profiler is not None:
                    profiler.disable()
            if handled != k:
                console.print(f"[red]{backend}: the engine handled {handled} of {k} deliveries[/]")
            engine_rates.append(handled / took)
            phases.append({"total": took, **phase_seconds,
                           **{f"sql:{key}": v[1] for key, v in sql_seconds.items()},
                           **{f"calls:{key}": v[0] for key, v in sql_seconds.items()}})
            ins, upd = await baseline(bs, note_ids, targets, args.batch)
            base_rates.append(k / (ins + upd))
            ins_rates.append(k / ins)
            upd_rates.append(k / upd)
            console.print(f"{backend} round {round_no + 1}: engine {engine_rates[-1]:,.0f} "
                          f"deliveries/s ({took:.2f} s), baseline {base_rates[-1]:,.0f} rows/s "
                          f"(insert {ins:.2f} s + update {upd:.2f} s)")
            if profiler is not None:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
                console.print(f"[bold]{backend}: cProfile of round 1's engine run (main thread), "
                              "by own time[/]")
                console.print(out.getvalue(), highlight=False, markup=False)
        by_status, queued = await counts(bs)
        expected_sent = 2 * k * args.rounds
        if by_status.get("sent", 0) != expected_sent or queued:
            console.print(f"[red]{backend}: deliveries by status {by_status}, queued "
                          f"notifications {queued}; expected {expected_sent} sent and none queued[/]")
        else:
            console.print(f"{backend}: checked: all {expected_sent:,} delivery rows sent, "
                          "no notification left queued")
        await container.close()
        return {"backend": backend, "engine": engine_rates, "baseline": base_rates,
                "insert": ins_rates, "update": upd_rates, "phases": phases, "k": k}


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tidings.provider.log").setLevel(logging.WARNING)
    console.print(f"[bold]bench/engine.py[/]: {args.deliveries:,} deliveries per round, batch "
                  f"{args.batch}, {args.rounds} round(s), {args.devices:,} devices")
    check_quiet()
    results = [await run_backend(b, args) for b in backends(args.backend)]
    table = Table(title=f"delivery engine vs bare SQL loop, medians of {args.rounds} round(s)")
    for col in ("backend", "engine deliveries/s", "per round", "baseline rows/s", "per round",
                "baseline insert rows/s", "baseline update rows/s", "ratio", f"target ≥ {TARGET}"):
        table.add_column(col, justify="right")
    for r in results:
        e, b = median(r["engine"]), median(r["baseline"])
        table.add_row(r["backend"], f"{e:,.0f}", ", ".join(f"{x:,.0f}" for x in r["engine"]),
                      f"{b:,.0f}", ", ".join(f"{x:,.0f}" for x in r["baseline"]),
                      f"{median(r['insert']):,.0f}", f"{median(r['update']):,.0f}",
                      f"{ratio(e, b):.3f}", verdict(ratio(e, b) >= TARGET))
    console.print(table)
    table = Table(title="where the engine's time goes (median share of the engine run)")
    for col in ("backend", "claim (UPDATE…RETURNING + 2 SELECTs)",
                "record (UPDATE x n + SELECT + UPDATE x notifications)",
                "rest (BEGIN/COMMIT, provider, decide)"):
        table.add_column(col, justify="right")
    for r in results:
        shares = {name: median([p.get(name, 0.0) / p["total"] for p in r["phases"]])
                  for name in ("claim", "record")}
        table.add_row(r["backend"], f"{shares['claim']:.0%}", f"{shares['record']:.0%}",
                      f"{1 - shares['claim'] - shares['record']:.0%}")
    console.print(table)
    for r in results:
        slowest = max(range(len(r["phases"])), key=lambda i: r["phases"][i]["total"])
        for i in sorted({0, slowest}):
            statement_table(r["backend"], i, r["phases"][i], r["k"])


def statement_table(backend: str, round_no: int, phase: dict[str, float], k: int) -> None:
    table = Table(title=f"{backend}: statements of the engine run, round {round_no + 1} (time from "
                  "the driver call to its rows, as seen by the event loop)")
    for col in ("statement", "calls", "seconds", "share of the engine run", "per delivery µs"):
        table.add_column(col, justify="left" if col == "statement" else "right")
    kinds = sorted((key[4:] for key in phase if key.startswith("sql:")),
                   key=lambda kind: -phase[f"sql:{kind}"])
    for kind in kinds:
        seconds = phase[f"sql:{kind}"]
        table.add_row(kind, str(int(phase[f"calls:{kind}"])), f"{seconds:.3f}",
                      f"{seconds / phase['total']:.0%}", f"{seconds / k * 1e6:.1f}")
    total_sql = sum(phase[f"sql:{kind}"] for kind in kinds)
    table.add_row("all statements", "", f"{total_sql:.3f}", f"{total_sql / phase['total']:.0%}",
                  f"{total_sql / k * 1e6:.1f}")
    table.add_row("the whole engine run", "", f"{phase['total']:.3f}", "100%",
                  f"{phase['total'] / k * 1e6:.1f}")
    console.print(table)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--deliveries", type=int, default=20_000, help="deliveries per round")
    p.add_argument("--batch", type=int, default=500,
                   help="the worker's batch size, and the baseline's")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--profile", action="store_true", help="cProfile the first round's engine run")
    p.add_argument("--postgres-url", default=None)
    args = p.parse_args()
    if args.postgres_url is None:
        from _common import POSTGRES_URL
        args.postgres_url = POSTGRES_URL
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
