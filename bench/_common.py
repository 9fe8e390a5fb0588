"""Helpers shared by the benchmarks: percentiles, rich output, throwaway stores."""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import make_url

from tidings.adapters.store.sql.store import SqlStore

# A wide table even when the output goes to a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "150")))

POSTGRES_URL = os.environ.get("TIDINGS_BENCH_POSTGRES_URL",
                              "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
ADMIN_KEY = "tda_bench-admin-key-0123456789abcdef"
SECRET_KEY = "bench-secret-key-that-is-long-enough-0123456789"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.3f}"


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def verdict(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]NOT met[/]"


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True)


def backends(choice: str) -> list[str]:
    return ["sqlite", "postgres"] if choice == "both" else [choice]


@dataclass
class BenchStore:
    store: SqlStore
    url: str
    backend: str
    sqlite_path: Path | None
    schema: str | None


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
        raise ValueError(schema)
    parsed = make_url(url)
    conn = await asyncpg.connect(host=parsed.host, port=parsed.port or 5432,
                                 user=parsed.username, password=parsed.password,
                                 database=parsed.database)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@asynccontextmanager
async def bench_store(backend: str, prefix: str, *, pool_size: int = 10,
                      postgres_url: str = POSTGRES_URL) -> AsyncIterator[BenchStore]:
    """A fresh, empty store: a SQLite file in a temporary folder, or a PostgreSQL schema of
    its own; both are removed afterwards, also on error."""
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix=f"{prefix}_"))
        path = folder / "tidings.db"
        url = f"sqlite+aiosqlite:///{path}"
        store = SqlStore(url)
        try:
            yield BenchStore(store, url, backend, path, None)
        finally:
            await store.close()
            shutil.rmtree(folder, ignore_errors=True)
        return
    schema = f"{prefix}_{secrets.token_hex(4)}"
    store = SqlStore(postgres_url, schema=schema, pool_size=pool_size)
    try:
        yield BenchStore(store, postgres_url, backend, None, schema)
    finally:
        await store.close()
        await drop_schema(postgres_url, schema)


async def pg_execute(url: str, schema: str, *statements: str) -> list[str]:
    """Run statements outside any transaction (VACUUM, ANALYZE) in the schema; returns the
    status of each."""
    import asyncpg

    parsed = make_url(url)
    conn = await asyncpg.connect(host=parsed.host, port=parsed.port or 5432,
                                 user=parsed.username, password=parsed.password,
                                 database=parsed.database, server_settings={"search_path": schema})
    try:
        return [await conn.execute(s) for s in statements]
    finally:
        await conn.close()


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values[:8]), idle


def others_busy(seconds: float = 1.0) -> float:
    """Share of all cores busy while this process sleeps: what else runs on the machine.
    Linux only; NaN elsewhere."""
    import time

    try:
        total0, idle0 = _cpu_times()
        time.sleep(seconds)
        total1, idle1 = _cpu_times()
    except OSError:
        return math.nan
    spent = total1 - total0
    return 1 - (idle1 - idle0) / spent if spent else math.nan


def check_quiet() -> None:
    """Say so when something else keeps the machine busy: every figure would be off."""
    busy = others_busy()
    cores = os.cpu_count() or 1
    note = f"other load on the machine before starting: {busy:.0%} of {cores} cores"
    if busy > 0.1:
        console.print(f"[yellow]warning:[/] {note}; the figures will be noisy (ratios less so)")
    else:
        console.print(note)
