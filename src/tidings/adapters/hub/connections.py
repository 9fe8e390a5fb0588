"""The WebSocket connections of the AWS mode, kept in the service's DynamoDB table.

API Gateway holds the connections; its `$connect` route records each one here and `$disconnect`
forgets it, so that whoever commits a stream event can find the user's connections and post to
them through the Management API. Each connection is two items, written and deleted together in
one transaction:

- `pk=A#{app}#U#{user}#WS, sk=C#{connection_id}`: the user's connections, one partition per
  user, read with a consistent Query when an event is published;
- `pk=WS#{connection_id}, sk=WS`: the pointer from a connection to its user, all that
  `$disconnect` (and a post that finds the connection gone) knows. It also carries
  `gsi1pk=WS#A#{app}, gsi1sk=C#{connection_id}`, so that closing every stream of an app (the
  app was deleted, one of its keys revoked) is a Query of `gsi1`, not a Scan of the table.

Both carry `ttl` = connected + 3 hours: API Gateway closes a connection after 2 hours, and a
`$disconnect` that never ran (it is best effort) must not leave the item for ever. DynamoDB
deletes expired items lazily, up to days later, so every read skips them itself.

The attributes also say which key authenticated the connection (`key_id`, when there was one):
revoking the key closes the streams it opened and no others, as on a node.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...domain.errors import NotConfigured
from ...domain.webhooks import iso
from ..aws_client import LazyClient
from ..store.dynamodb import keys
from ..store.dynamodb.table import parse_url

CONNECTION_TTL_SECONDS = 3 * 3600
POINTER_SK = keys.CONNECTION_POINTER
APP_INDEX = "gsi1"


def user_key(app_id: str, user_id: str) -> str:
    return keys.connections(app_id, user_id)


def connection_key(connection_id: str) -> str:
    return f"C#{connection_id}"


def pointer_key(connection_id: str) -> str:
    return keys.connection_pointer(connection_id)


def app_index_key(app_id: str) -> str:
    return f"WS#A#{app_id}"


def parse_table_url(url: str) -> tuple[str, str, str | None]:
    """`dynamodb://<table>?region=<region>[&endpoint_url=<url>]` as (table, region, endpoint)."""
    location = parse_url(url)
    if not location.region:
        raise NotConfigured(f"the database URL must name a region: dynamodb://{location.table}"
                            "?region=<region>")
    return location.table, location.region, location.endpoint_url


@dataclass(frozen=True)
class _Item:
    app_id: str
    user_id: str
    key_id: str | None
    expires: int


def _string(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return value.get("S") if isinstance(value, dict) else None


def _read(item: dict[str, Any]) -> _Item | None:
    app_id, user_id = _string(item, "app_id"), _string(item, "user_id")
    ttl = item.get("ttl")
    if app_id is None or user_id is None or not isinstance(ttl, dict) or "N" not in ttl:
        return None
    return _Item(app_id, user_id, _string(item, "key_id"), int(ttl["N"]))


class Connections:
    """The registry: `add` on `$connect`, `remove` on `$disconnect`, the reads when publishing
    and kicking. A failing AWS call raises botocore's error; the caller decides what it costs.

    `clock`: the time in epoch seconds, against which `ttl` is read."""

    def __init__(self, table: str, region: str, endpoint_url: str | None = None, *,
                 client: Any = None, borrow: Callable[[], Awaitable[Any]] | None = None,
                 clock: Callable[[], float] = time.time, pool: int = 32,
                 timeout: float = 10.0) -> None:
        """`borrow`: where to get the DynamoDB client from (the store's), instead of making
        one of its own."""
        self.table = table
        self._client = LazyClient("dynamodb", region, endpoint_url, client=client, borrow=borrow,
                                  pool=pool, connect_timeout=timeout, read_timeout=timeout)
        self._clock = clock

    async def add(self, app_id: str, user_id: str, connection_id: str, at: datetime, *,
                  key_id: str | None = None) -> None:
        """Records a connection opened at `at` (an aware datetime); adding it again rewrites it."""
        if at.tzinfo is None:
            raise ValueError("the time a connection opened must be timezone-aware")
        common: dict[str, Any] = {
            "app_id": {"S": app_id}, "user_id": {"S": user_id},
            "ttl": {"N": str(int(at.timestamp()) + CONNECTION_TTL_SECONDS)}}
        if key_id is not None:
            common["key_id"] = {"S": key_id}
        user_item = {"pk": {"S": user_key(app_id, user_id)},
                     "sk": {"S": connection_key(connection_id)},
                     "connection_id": {"S": connection_id}, "connected_at": {"S": iso(at)},
                     **common}
        pointer = {"pk": {"S": pointer_key(connection_id)}, "sk": {"S": POINTER_SK},
                   "gsi1pk": {"S": app_index_key(app_id)},
                   "gsi1sk": {"S": connection_key(connection_id)}, **common}
        client = await self._client.get()
        await client.transact_write_items(TransactItems=[
            {"Put": {"TableName": self.table, "Item": user_item}},
            {"Put": {"TableName": self.table, "Item": pointer}}])

    async def _pointer(self, connection_id: str) -> _Item | None:
        """The connection's pointer item, read consistently; None when there is none."""
        client = await self._client.get()
        answer = await client.get_item(
            TableName=self.table, ConsistentRead=True,
            Key={"pk": {"S": pointer_key(connection_id)}, "sk": {"S": POINTER_SK}})
        return _read(answer.get("Item") or {})

    async def get(self, connection_id: str) -> tuple[str, str] | None:
        """The (app_id, user_id) of a live connection, read consistently; None when it is
        unknown or its time is up."""
        found = await self._pointer(connection_id)
        if found is None or found.expires <= self._clock():
            return None
        return found.app_id, found.user_id

    async def remove(self, connection_id: str) -> tuple[str, str] | None:
        """Forgets a connection; returns its (app_id, user_id), or None when it was unknown."""
        found = await self._pointer(connection_id)
        if found is None:
            return None
        await self.discard(found.app_id, found.user_id, connection_id)
        return found.app_id, found.user_id

    async def discard(self, app_id: str, user_id: str, connection_id: str) -> None:
        """Forgets a connection whose user is known (both items; nothing if there are none)."""
        client = await self._client.get()
        await client.transact_write_items(TransactItems=[
            {"Delete": {"TableName": self.table,
                        "Key": {"pk": {"S": user_key(app_id, user_id)},
                                "sk": {"S": connection_key(connection_id)}}}},
            {"Delete": {"TableName": self.table,
                        "Key": {"pk": {"S": pointer_key(connection_id)},
                                "sk": {"S": POINTER_SK}}}}])

    async def of_user(self, app_id: str, user_id: str, *, key_id: str | None = None) -> list[str]:
        """The user's live connections (of those opened with `key_id`, when given), read
        consistently: a connection recorded just before is there."""
        now = self._clock()
        out = []
        for item in await self._query(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :c)", ConsistentRead=True,
                ExpressionAttributeValues={":pk": {"S": user_key(app_id, user_id)},
                                           ":c": {"S": "C#"}}):
            found, connection_id = _read(item), _string(item, "connection_id")
            # The attributes are checked as well as the key: a user id may contain `#`.
            if (found is not None and connection_id and found.expires > now
                    and (found.app_id, found.user_id) == (app_id, user_id)
                    and (key_id is None or found.key_id == key_id)):
                out.append(connection_id)
        return out

    async def of_app(self, app_id: str, *, key_id: str | None = None) -> list[tuple[str, str]]:
        """The app's live connections (of those opened with `key_id`, when given) as
        (user_id, connection_id), from the index: a connection recorded a moment ago may be
        missing."""
        now = self._clock()
        out = []
        prefix = pointer_key("")
        for item in await self._query(
                IndexName=APP_INDEX, KeyConditionExpression="gsi1pk = :p",
                ExpressionAttributeValues={":p": {"S": app_index_key(app_id)}}):
            found, pk = _read(item), _string(item, "pk") or ""
            if (found is not None and pk.startswith(prefix) and found.expires > now
                    and found.app_id == app_id and (key_id is None or found.key_id == key_id)):
                out.append((found.user_id, pk.removeprefix(prefix)))
        return out

    async def close(self) -> None:
        await self._client.close()

    async def _query(self, **params: Any) -> list[dict[str, Any]]:
        client = await self._client.get()
        items: list[dict[str, Any]] = []
        while True:
            answer = await client.query(TableName=self.table, **params)
            items.extend(answer.get("Items") or ())
            last = answer.get("LastEvaluatedKey")
            if not last:
                return items
            params["ExclusiveStartKey"] = last
