"""Each user's numbered stream of inbox changes.

The number is taken on the user's counter row (`inbox_counters.stream_seq`) in the transaction
of the change: the row lock orders one user's writers, so numbers follow commit order and have
no holes, which is what lets a connection tell a missing event from a late one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ....domain.stream import StreamEvent, StreamHead
from ....ports import StreamEntry
from .counters import COLUMNS
from .rows import forget_rows, from_ms, to_ms
from .schema import inbox_counters, stream_events

c = inbox_counters.c
s = stream_events.c
_ZERO_COUNTS = dict.fromkeys(("unread", *COLUMNS.values()), 0)


def _take(dialect: str) -> Any:
    """Add `stream_seq` to the user's counter row (made if missing) and read the row back."""
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(inbox_counters)
    return stmt.on_conflict_do_update(
        index_elements=[c.app_id, c.user_id],
        set_={"stream_seq": c.stream_seq + stmt.excluded.stream_seq},
    ).returning(c.user_id, c.stream_seq, c.unread, c.unread_in_app)


_TAKE = {name: _take(name) for name in ("sqlite", "postgresql")}
_SINCE = (
    select(s.seq, s.type, s.data, s.created_at)
    .where(s.app_id == bindparam("app"), s.user_id == bindparam("user"),
           s.seq > bindparam("after"), s.seq <= bindparam("upto"))
    .order_by(s.seq)
    .limit(bindparam("limit"))
)
# One statement (every stream opens with it): the counter row and the oldest kept event.
_HEAD = select(c.stream_seq, c.unread, c.unread_in_app, select(func.min(s.seq)).where(
    s.app_id == c.app_id, s.user_id == c.user_id).scalar_subquery()).where(
    c.app_id == bindparam("app"), c.user_id == bindparam("user"))
_NO_LIMIT = 2**62
_INSERT = insert(stream_events)


class SqlStream:
    def __init__(self, conn: Any) -> None:
        self._c = conn

    async def append(self, app_id: str, entries: Sequence[StreamEntry],
                     at: datetime) -> list[StreamEvent]:
        if not entries:
            return []
        per_user: dict[str, list[StreamEntry]] = defaultdict(list)
        for entry in entries:
            per_user[entry.user_id].append(entry)
        # Users in one order in every transaction: two writers never wait on each other's rows
        # in opposite orders (a deadlock on PostgreSQL).
        users = sorted(per_user)
        rows = (await self._c.execute(_TAKE[self._c.dialect.name], [
            {"app_id": app_id, "user_id": u, **_ZERO_COUNTS, "stream_seq": len(per_user[u])}
            for u in users])).all()
        tops = {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}
        events: list[StreamEvent] = []
        for user in users:
            top, unread, unread_in_app = tops[user]
            mine = per_user[user]
            first = top - len(mine) + 1
            events.extend(StreamEvent(app_id, user, first + i, e.type, dict(e.data), at,
                                      unread, unread_in_app) for i, e in enumerate(mine))
        ms = to_ms(at)
        if hasattr(self._c, "executemany_plain"):  # SQLite: straight through the driver
            dumps = orjson.dumps
            await self._c.executemany_plain(_INSERT, [
                {"app_id": app_id, "user_id": e.user_id, "seq": e.seq, "type": e.type,
                 "data": dumps(e.data).decode(), "created_at": ms} for e in events])
        else:
            await self._c.execute(_INSERT, [
                {"app_id": app_id, "user_id": e.user_id, "seq": e.seq, "type": e.type,
                 "data": e.data, "created_at": ms} for e in events])
        return events

    async def since(self, app_id: str, user_id: str, after: int, upto: int | None,
                    limit: int) -> list[StreamEvent]:
        rows = (await self._c.execute(_SINCE, {
            "app": app_id, "user": user_id, "after": after,
            "upto": _NO_LIMIT if upto is None else upto, "limit": limit})).all()
        return [StreamEvent(app_id, user_id, int(r[0]), r[1], r[2], from_ms(r[3]))
                for r in rows]

    async def head(self, app_id: str, user_id: str) -> StreamHead:
        row = (await self._c.execute(_HEAD, {"app": app_id, "user": user_id})).first()
        if row is None:
            return StreamHead(0, 0, 0, 1)
        seq, oldest = int(row[0]), row[3]
        return StreamHead(seq, int(row[1]), int(row[2]), seq + 1 if oldest is None else int(oldest))

    async def purge(self, before: datetime) -> int:
        result = await self._c.execute(delete(stream_events).where(
            s.created_at < to_ms(before)))
        return int(result.rowcount or 0)


async def forget(conn: Any, app_id: str, user_id: str | None = None) -> None:
    await forget_rows(conn, stream_events, app_id, user_id)
