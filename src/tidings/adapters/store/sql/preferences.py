"""Users' notification preferences in SQL: one document per user."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .rows import forget_rows, to_ms
from .schema import preferences as t

_GET = select(t.c.doc).where(t.c.app_id == bindparam("app"), t.c.user_id == bindparam("user"))
_GET_MANY = select(t.c.user_id, t.c.doc).where(
    t.c.app_id == bindparam("app"), t.c.user_id.in_(bindparam("users", expanding=True)))


def _upsert(dialect: str) -> Any:
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(t)
    return stmt.on_conflict_do_update(index_elements=[t.c.app_id, t.c.user_id],
                                      set_={"doc": stmt.excluded.doc,
                                            "updated_at": stmt.excluded.updated_at})


_UPSERTS = {name: _upsert(name) for name in ("sqlite", "postgresql")}


class SqlPreferences:
    def __init__(self, conn: Any) -> None:
        self._c = conn

    async def get(self, app_id: str, user_id: str) -> dict[str, Any] | None:
        row = (await self._c.execute(_GET, {"app": app_id, "user": user_id})).first()
        return None if row is None else dict(row[0])

    async def get_many(self, app_id: str, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not user_ids:
            return {}
        rows = await self._c.execute(_GET_MANY, {"app": app_id, "users": list(user_ids)})
        return {r[0]: r[1] for r in rows}

    async def put(self, app_id: str, user_id: str, doc: dict[str, Any], at: datetime) -> None:
        await self._c.execute(_UPSERTS[self._c.dialect.name], {
            "app_id": app_id, "user_id": user_id, "doc": doc, "updated_at": to_ms(at)})


async def forget(conn: Any, app_id: str, user_id: str | None = None) -> None:
    await forget_rows(conn, t, app_id, user_id)
