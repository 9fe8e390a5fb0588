"""Users' notification preferences on DynamoDB: one document per user, the item `PREF` in the
user's partition (what a send reads beside the user's devices)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from . import keys
from .codec import dumps, encode, loads, us
from .unit import Unit


class DynamoPreferences:
    def __init__(self, unit: Unit) -> None:
        self._u = unit

    async def get(self, app_id: str, user_id: str) -> dict[str, Any] | None:
        item = await self._u.get(keys.user(app_id, user_id), keys.PREF)
        return None if item is None else dict(loads(item["doc"]["S"]))

    async def get_many(self, app_id: str, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not user_ids:
            return {}
        items = await self._u.table.get_many([(keys.user(app_id, u), keys.PREF) for u in user_ids])
        return {i["user_id"]["S"]: dict(loads(i["doc"]["S"])) for i in items}

    async def put(self, app_id: str, user_id: str, doc: dict[str, Any], at: datetime) -> None:
        self._u.put(encode({"pk": keys.user(app_id, user_id), "sk": keys.PREF, "app_id": app_id,
                            "user_id": user_id, "doc": dumps(doc), "updated_at": us(at)}))
