"""One SQL store for SQLite (embedded mode) and PostgreSQL (cluster mode)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

import orjson
from sqlalchemy import create_engine, event, text
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ....domain.errors import NotConfigured
from .apps import SqlApps, SqlKeys
from .broadcasts import SqlBroadcasts
from .events import SqlEvents
from .idempotency import SqlIdempotency
from .notifications import SqlNotifications
from .preferences import SqlPreferences
from .queue import SqlQueue
from .stream import SqlStream
from .topics import SqlTopics
from .users import SqlDevices, SqlUsers

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA cache_size=-65536",
    "PRAGMA mmap_size=268435456",
)
_MIGRATION_LOCK = 0x7469_6469  # any constant: serialises concurrent migrations on PostgreSQL


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class InlineConnection:
    """A synchronous SQLite connection behind the async interface the repositories use.

    SQLite is a library, not a server: a statement is CPU work in this process, whichever
    thread runs it. Going through a driver thread (aiosqlite) costs several thread hand-offs per
    statement, which measured at about 1 ms per unit of work here, several times the SQL itself;
    running the statement inline costs nothing extra. Writers are serialised in process by the
    store's lock, so an inline statement never waits on another of this process's writers.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.dialect = conn.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        if parameters is None:
            return self._conn.execute(statement)
        return self._conn.execute(statement, parameters)

    async def fetch_plain(self, statement: Any, parameters: dict[str, Any]) -> list[Any]:
        """Rows of `statement` as sqlite3 gives them (JSON columns still text): for the hottest
        read, the inbox page, where SQLAlchemy's per-row result processing was most of it."""
        cursor = self._conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            sql, defaults = _named(statement)
            return list(cursor.execute(sql, {**defaults, **parameters}).fetchall())
        finally:
            cursor.close()

    async def executemany_plain(self, statement: Any, rows: list[dict[str, Any]]) -> int:
        """Run `statement` once per row straight on sqlite3, for statements whose parameters
        need no type conversion (strings, numbers, None): SQLAlchemy's per-row parameter
        processing was a sixth of a delivery round. Returns the rows changed."""
        cursor = self._conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            sql, defaults = _named(statement)
            cursor.executemany(sql, [{**defaults, **row} for row in rows] if defaults else rows)
            return int(cursor.rowcount)
        finally:
            cursor.close()


_NAMED_DIALECT = sqlite_dialect.dialect(paramstyle="named")
_NAMED_SQL: dict[Any, tuple[str, dict[str, Any]]] = {}


def _named(statement: Any) -> tuple[str, dict[str, Any]]:
    """The statement's SQLite text with :name parameters, and the values SQLAlchemy fills in
    itself (an OFFSET 0, literal defaults), compiled once per statement."""
    found = _NAMED_SQL.get(statement)
    if found is None:
        compiled = statement.compile(dialect=_NAMED_DIALECT)
        defaults = {k: v for k, v in compiled.params.items() if v is not None}
        found = _NAMED_SQL[statement] = (str(compiled), defaults)
    return found


class SqlTx:
    """The repositories of one unit of work, sharing one connection."""

    def __init__(self, conn: Any) -> None:
        self.connection = conn
        self.apps = SqlApps(conn)
        self.keys = SqlKeys(conn)
        self.users = SqlUsers(conn)
        self.devices = SqlDevices(conn)
        self.notifications = SqlNotifications(conn)
        self.deliveries = SqlQueue(conn)
        self.idempotency = SqlIdempotency(conn)
        self.events = SqlEvents(conn)
        self.stream = SqlStream(conn)
        self.preferences = SqlPreferences(conn)
        self.topics = SqlTopics(conn)
        self.broadcasts = SqlBroadcasts(conn)


class SqlStore:
    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False,
                 schema: str | None = None) -> None:
        """`schema` (PostgreSQL only) keeps every table in that schema, created on migrate."""
        parsed = make_url(url)
        if schema is not None and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise NotConfigured(f"schema {schema!r} must match [a-z_][a-z0-9_]{{0,62}}")
        self.url = url
        self.schema = schema
        self.dialect = parsed.get_backend_name()
        self._sqlite: tuple[Engine, Engine] | None = None
        self._engine: AsyncEngine | None = None
        if self.dialect == "sqlite":
            if parsed.drivername not in ("sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"):
                raise NotConfigured("use a SQLite URL such as sqlite+aiosqlite:///path.db")
            sync_url = parsed.set(drivername="sqlite+pysqlite")
            writer = self._sqlite_engine(sync_url, immediate=True, pool_size=1, echo=echo)
            reader = self._sqlite_engine(sync_url, immediate=False, pool_size=4, echo=echo)
            self._sqlite = (writer, reader)
            # One writer at a time in this process; other processes wait on busy_timeout.
            self._write_lock = asyncio.Lock()
        elif self.dialect == "postgresql":
            if parsed.drivername != "postgresql+asyncpg":
                url = str(parsed.set(drivername="postgresql+asyncpg").render_as_string(False))
            try:
                import asyncpg  # noqa: F401
            except ImportError as exc:
                raise NotConfigured(
                    "PostgreSQL needs the asyncpg driver: pip install 'tidings[postgres]'"
                ) from exc
            # Statements are prepared and reused; after five runs PostgreSQL may switch to a
            # generic plan, and for `IN (500 parameters)` on a growing table it chose a scan
            # that made one claim round take 1.4 s instead of 4 ms. Plans here are cheap to
            # make: always plan for the actual values.
            server_settings = {"plan_cache_mode": "force_custom_plan"}
            if schema is not None:
                server_settings["search_path"] = schema
            connect_args: dict[str, Any] = {"server_settings": server_settings}
            self._engine = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size, echo=echo,
                json_serializer=_json_dumps, json_deserializer=orjson.loads,
                connect_args=connect_args)
        else:
            raise NotConfigured(f"unsupported database {self.dialect!r}: use SQLite or PostgreSQL")

    @staticmethod
    def _sqlite_engine(url: URL, *, immediate: bool, pool_size: int, echo: bool) -> Engine:
        engine = create_engine(
            url, pool_size=pool_size, max_overflow=0, echo=echo,
            json_serializer=_json_dumps, json_deserializer=orjson.loads)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control from the driver so that BEGIN is ours to choose.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma)
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # IMMEDIATE takes the write lock up front: no deadlock upgrading a read to a write.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlTx]:
        if self._sqlite is not None:
            async with self._write_lock:
                with self._sqlite[0].begin() as conn:
                    yield SqlTx(InlineConnection(conn))
            return
        assert self._engine is not None
        async with self._engine.begin() as aconn:
            yield SqlTx(aconn)

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[SqlTx]:
        if self._sqlite is not None:
            with self._sqlite[1].connect() as conn:
                try:
                    yield SqlTx(InlineConnection(conn))
                finally:
                    conn.rollback()
            return
        assert self._engine is not None
        async with self._engine.connect() as aconn:
            try:
                yield SqlTx(aconn)
            finally:
                await aconn.rollback()

    async def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        def upgrade(conn: Connection) -> None:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
                if self.schema is not None:
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            config = Config()
            config.set_main_option("script_location", str(files(__package__) / "migrations"))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

        if self._sqlite is not None:
            async with self._write_lock:
                with self._sqlite[0].begin() as conn:
                    upgrade(conn)
            return
        assert self._engine is not None
        async with self._engine.begin() as aconn:
            await aconn.run_sync(upgrade)

    async def ping(self) -> None:
        async with self.reader() as tx:
            await tx.connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        if self._sqlite is not None:
            for engine in self._sqlite:
                engine.dispose()
        if self._engine is not None:
            await self._engine.dispose()
