"""Exact unread counts per user, overall and per channel, moved in the same transaction as the
notifications they count."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ....domain.notifications import CHANNEL_BITS, Channel
from .rows import forget_rows
from .schema import inbox_counters as t

COLUMNS = {bit: f"unread_{channel.value}" for channel, bit in CHANNEL_BITS.items()}
_COUNT_COLUMNS = ("unread", *COLUMNS.values())


def _upsert(dialect: str) -> Any:
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(t)
    return stmt.on_conflict_do_update(
        index_elements=[t.c.app_id, t.c.user_id],
        set_={name: t.c[name] + stmt.excluded[name] for name in _COUNT_COLUMNS})


_UPSERTS = {name: _upsert(name) for name in ("sqlite", "postgresql")}
_READ = select(*(t.c[name] for name in _COUNT_COLUMNS)).where(
    t.c.app_id == bindparam("app"), t.c.user_id == bindparam("user"))


def deltas(app_id: str, rows: Iterable[tuple[str, int]], sign: int) -> list[dict[str, Any]]:
    """Per-user changes for notifications given as (user_id, channel_mask)."""
    per_user: dict[str, dict[str, Any]] = defaultdict(
        lambda: dict.fromkeys(_COUNT_COLUMNS, 0))
    for user_id, mask in rows:
        change = per_user[user_id]
        change["unread"] += sign
        for bit, name in COLUMNS.items():
            if mask & bit:
                change[name] += sign
    # Users in one order in every transaction, so that two writers never wait on each other's
    # counter rows in opposite orders (a deadlock on PostgreSQL between two API nodes).
    return [{"app_id": app_id, "user_id": user, **change}
            for user, change in sorted(per_user.items())]


async def apply(conn: Any, changes: list[dict[str, Any]]) -> None:
    if changes:
        plain = getattr(conn, "executemany_plain", None)
        if plain is not None:
            await plain(_UPSERTS["sqlite"], [{**c, "stream_seq": 0} for c in changes])
        else:
            await conn.execute(_UPSERTS[conn.dialect.name], changes)


async def read(conn: Any, app_id: str, user_id: str, channel: str | None) -> int:
    row = (await conn.execute(_READ, {"app": app_id, "user": user_id})).first()
    if row is None:
        return 0
    if channel is None:
        return int(row[0])
    return int(row[1 + list(COLUMNS).index(CHANNEL_BITS[Channel(channel)])])


async def zero(conn: Any, app_id: str, user_id: str) -> None:
    """A deleted user's counts, keeping the row's stream number: a user made again under the
    same id continues the numbers, so a stream still open somewhere (a lost kick) cannot take
    the new user's first events for ones it already sent."""
    await conn.execute(update(t).where(t.c.app_id == app_id, t.c.user_id == user_id)
                       .values(dict.fromkeys(_COUNT_COLUMNS, 0)))


async def forget(conn: Any, app_id: str, user_id: str | None = None) -> None:
    await forget_rows(conn, t, app_id, user_id)
