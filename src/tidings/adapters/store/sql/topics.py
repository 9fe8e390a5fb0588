"""Topics and their subscriptions in SQL.

A subscription row's primary key is (app, topic, user): a broadcast to a topic walks it in
user order as one index range scan, page by page, from the last user id it expanded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ....domain.errors import NotFound
from ....domain.topics import Subscription, Topic
from .rows import from_ms, to_ms
from .schema import topic_subscriptions as s
from .schema import topics as t

# Keys and user ids are never empty: "" stands for "from the start" in the range conditions.
_START = ""
_NEWEST = (2**62, _START)

_GET = select(t).where(t.c.app_id == bindparam("app"), t.c.key == bindparam("key"))
_LIST = (select(t)
         .where(t.c.app_id == bindparam("app"), t.c.key > bindparam("after"))
         .order_by(t.c.key)
         .limit(bindparam("limit")))
_RENAME = (update(t)
           .where(t.c.app_id == bindparam("app"), t.c.key == bindparam("topic"))
           .values(name=bindparam("new_name"), updated_at=bindparam("at")))
_DELETE = delete(t).where(t.c.app_id == bindparam("app"), t.c.key == bindparam("key"))
_DELETE_SUBSCRIPTIONS = delete(s).where(s.c.app_id == bindparam("app"),
                                        s.c.topic == bindparam("key"))
# FOR KEY SHARE (PostgreSQL; SQLite serialises its writers anyway): a topic being deleted makes
# a subscription wait for that delete to commit and then see the topic gone, so no
# subscription outlives its topic; renaming a topic does not wait for its subscribers.
_HOLD = (select(t.c.key)
         .where(t.c.app_id == bindparam("app"), t.c.key == bindparam("key"))
         .with_for_update(read=True, key_share=True))
_UNSUBSCRIBE = delete(s).where(s.c.app_id == bindparam("app"), s.c.topic == bindparam("key"),
                               s.c.user_id == bindparam("user"))
_SUBSCRIBERS = (select(s)
                .where(s.c.app_id == bindparam("app"), s.c.topic == bindparam("key"),
                       tuple_(s.c.created_at, s.c.user_id)
                       < tuple_(bindparam("before_ms"), bindparam("before_user")))
                .order_by(s.c.created_at.desc(), s.c.user_id.desc())
                .limit(bindparam("limit")))
_SUBSCRIBER_IDS = (select(s.c.user_id)
                   .where(s.c.app_id == bindparam("app"), s.c.topic == bindparam("key"),
                          s.c.user_id > bindparam("after"))
                   .order_by(s.c.user_id)
                   .limit(bindparam("limit")))
_COUNT = select(func.count()).select_from(s).where(s.c.app_id == bindparam("app"),
                                                   s.c.topic == bindparam("key"))
_OF_USER = (select(s)
            .where(s.c.app_id == bindparam("app"), s.c.user_id == bindparam("user"),
                   s.c.topic > bindparam("after"))
            .order_by(s.c.topic)
            .limit(bindparam("limit")))
# SQLite, with no statistics, took the covering (app, topic, …) index for this one: a walk
# over every subscription of the app, filtered by user. The user's index is named outright.
_OF_USER_SQLITE = text(
    "SELECT app_id, topic, user_id, created_at FROM topic_subscriptions"
    " INDEXED BY ix_topic_subscriptions_user"
    " WHERE app_id = :app AND user_id = :user AND topic > :after ORDER BY topic LIMIT :limit")


def _insert(dialect: str, table: Any, key: list[Any]) -> Any:
    """INSERT … ON CONFLICT DO NOTHING RETURNING: a row back means this call created it. On
    PostgreSQL a concurrent insert of the same key waits for the other to commit and then does
    nothing, instead of failing on the primary key."""
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(table)
    return stmt.on_conflict_do_nothing(index_elements=key).returning(key[-1])


_CREATE = {d: _insert(d, t, [t.c.app_id, t.c.key]) for d in ("sqlite", "postgresql")}
_SUBSCRIBE = {d: _insert(d, s, [s.c.app_id, s.c.topic, s.c.user_id])
              for d in ("sqlite", "postgresql")}


def _topic(row: Any) -> Topic:
    return Topic(app_id=row.app_id, key=row.key, name=row.name,
                 created_at=from_ms(row.created_at), updated_at=from_ms(row.updated_at))


def _subscription(row: Any) -> Subscription:
    return Subscription(app_id=row.app_id, topic=row.topic, user_id=row.user_id,
                        created_at=from_ms(row.created_at))


class SqlTopics:
    def __init__(self, conn: Any) -> None:
        self._c = conn

    async def put(self, topic: Topic) -> bool:
        created = (await self._c.execute(_CREATE[self._c.dialect.name], {
            "app_id": topic.app_id, "key": topic.key, "name": topic.name,
            "created_at": to_ms(topic.created_at), "updated_at": to_ms(topic.updated_at),
        })).first()
        if created is not None:
            return True
        await self._c.execute(_RENAME, {"app": topic.app_id, "topic": topic.key,
                                        "new_name": topic.name, "at": to_ms(topic.updated_at)})
        return False

    async def get(self, app_id: str, key: str) -> Topic | None:
        row = (await self._c.execute(_GET, {"app": app_id, "key": key})).first()
        return None if row is None else _topic(row)

    async def delete(self, app_id: str, key: str) -> bool:
        # The topic row first: its row lock is what concurrent subscribes wait on (see _HOLD).
        found = await self._c.execute(_DELETE, {"app": app_id, "key": key})
        await self._c.execute(_DELETE_SUBSCRIPTIONS, {"app": app_id, "key": key})
        return bool(found.rowcount)

    async def subscribe(self, app_id: str, key: str, user_id: str, at: datetime) -> bool:
        """Raises NotFound when the topic does not exist (or was deleted meanwhile)."""
        if (await self._c.execute(_HOLD, {"app": app_id, "key": key})).first() is None:
            raise NotFound(f"topic {key} not found")
        row = (await self._c.execute(_SUBSCRIBE[self._c.dialect.name], {
            "app_id": app_id, "topic": key, "user_id": user_id, "created_at": to_ms(at)})).first()
        return row is not None

    async def unsubscribe(self, app_id: str, key: str, user_id: str) -> bool:
        result = await self._c.execute(_UNSUBSCRIBE, {"app": app_id, "key": key, "user": user_id})
        return bool(result.rowcount)

    async def subscribers(self, app_id: str, key: str, limit: int,
                          before: tuple[int, str] | None) -> list[Subscription]:
        before_ms, before_user = before or _NEWEST
        rows = await self._c.execute(_SUBSCRIBERS, {
            "app": app_id, "key": key, "before_ms": before_ms, "before_user": before_user,
            "limit": limit})
        return [_subscription(r) for r in rows]

    async def subscriber_ids(self, app_id: str, key: str, after: str | None,
                             limit: int) -> list[str]:
        rows = await self._c.execute(_SUBSCRIBER_IDS, {
            "app": app_id, "key": key, "after": after or _START, "limit": limit})
        return [r[0] for r in rows]

    async def count(self, app_id: str, key: str) -> int:
        return int((await self._c.execute(_COUNT, {"app": app_id, "key": key})).scalar_one())

    async def of_user(self, app_id: str, user_id: str, limit: int,
                      after: str | None) -> list[Subscription]:
        stmt = _OF_USER_SQLITE if self._c.dialect.name == "sqlite" else _OF_USER
        rows = await self._c.execute(stmt, {
            "app": app_id, "user": user_id, "after": after or _START, "limit": limit})
        return [_subscription(r) for r in rows]

    # Last: inside the class, `list` after this names the method, not the builtin.
    async def list(self, app_id: str, limit: int, after: str | None) -> list[Topic]:
        rows = await self._c.execute(_LIST, {"app": app_id, "after": after or _START,
                                             "limit": limit})
        return [_topic(r) for r in rows]


async def forget(conn: Any, app_id: str, user_id: str | None = None) -> None:
    """Remove the app's topics and subscriptions, or only the user's subscriptions."""
    if user_id is not None:
        await conn.execute(delete(s).where(s.c.app_id == app_id, s.c.user_id == user_id))
        return
    await conn.execute(delete(s).where(s.c.app_id == app_id))
    await conn.execute(delete(t).where(t.c.app_id == app_id))
