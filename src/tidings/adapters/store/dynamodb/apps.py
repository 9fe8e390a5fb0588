"""Apps and their API keys on DynamoDB.

An app is one item, listed through the `gsi1` partition `keys.APPS`. A key is three copies of
one item, written and revoked together in the unit of work: under its app's partition (sk =
key id, so that `active` is one strongly consistent Query in id order), under its hash (what
authentication looks up) and under its id.

Deleting an app is a rare operator's act that has to reach every item the app owns, wherever
it is: a parallel Scan of the table for the keys beginning with `A#<app>#` (and the app's
idempotency records and WebSocket pointers), deleted with BatchWriteItem as the Scan goes. It
runs when `delete` is called, not at the unit's commit: a unit that fails afterwards keeps the
app item but not what the app owned."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from ....domain.apps import ApiKey, App, CredentialKind
from ....domain.errors import StoreConflict
from . import keys
from .codec import Item, at_us, decode, dumps, encode, loads, us
from .table import Table
from .unit import ReadOnly, Unit

# Segments of the Scan that deletes an app, read at once.
SCAN_SEGMENTS = 4
# What BatchWriteItem takes at once.


def app_item(app: App) -> Item:
    return encode({
        "pk": keys.app(app.id), "sk": keys.APP_ITEM, "gsi1pk": keys.APPS, "gsi1sk": app.id,
        "id": app.id, "name": app.name, "routing": dumps(app.routing),
        "defaults": dumps(app.defaults),
        "webhook": None if app.webhook is None else dumps(app.webhook),
        "providers_secret": app.providers_secret, "provider_names": list(app.provider_names),
        "webhook_secret": app.webhook_secret,
        "created_at": us(app.created_at) if app.created_at else 0,
        "updated_at": us(app.updated_at) if app.updated_at else 0})


def app_of(item: Item) -> App:
    v = decode(item)
    return App(id=v["id"], name=v["name"], routing=loads(v.get("routing")) or {},
               defaults=loads(v.get("defaults")) or {}, webhook=loads(v.get("webhook")),
               providers_secret=v.get("providers_secret"),
               provider_names=list(v.get("provider_names") or []),
               webhook_secret=v.get("webhook_secret"),
               created_at=at_us(v.get("created_at", 0)), updated_at=at_us(v.get("updated_at", 0)))


def _key_values(k: ApiKey) -> dict[str, Any]:
    return {"id": k.id, "kind": k.kind.value, "app_id": k.app_id, "prefix": k.prefix,
            "key_hash": k.key_hash, "signing_secret": k.signing_secret,
            "created_at": us(k.created_at),
            "revoked_at": None if k.revoked_at is None else us(k.revoked_at)}


def _key_copies(k: ApiKey) -> list[tuple[str, str]]:
    """Where the copies of a key live: by app (sk = id), by hash, by id."""
    return [(keys.app_keys(k.app_id), k.id), (keys.key_hash(k.key_hash), keys.KEY_BY_HASH),
            (keys.key_id(k.id), keys.KEY_BY_ID)]


def key_of(item: Item) -> ApiKey:
    v = decode(item)
    created = at_us(v["created_at"])
    assert created is not None
    return ApiKey(id=v["id"], kind=CredentialKind(v["kind"]), app_id=v.get("app_id"),
                  prefix=v["prefix"], key_hash=v["key_hash"],
                  signing_secret=v.get("signing_secret"), created_at=created,
                  revoked_at=at_us(v.get("revoked_at")))


class DynamoApps:
    def __init__(self, unit: Unit) -> None:
        self._u = unit

    async def get(self, app_id: str) -> App | None:
        item = await self._u.get(keys.app(app_id), keys.APP_ITEM)
        return None if item is None else app_of(item)

    async def list(self, limit: int, after: str | None) -> list[App]:
        # The index is eventually consistent: an app made a moment ago may be missing.
        items = await self._u.table.query_until(
            keys.APPS, limit, index="gsi1",
            sk_from=None if after is None else after + "\x00")
        return [app_of(i) for i in items]

    async def add(self, app: App) -> None:
        if await self._u.get(keys.app(app.id), keys.APP_ITEM) is not None:
            raise StoreConflict(f"app {app.id} exists")
        self._u.put(app_item(app), condition="attribute_not_exists(pk)",
                    conflict=f"app {app.id} exists")

    async def update(self, app: App) -> None:
        found = await self._u.get(keys.app(app.id), keys.APP_ITEM)
        if found is None:  # as SQL's UPDATE of no row
            return
        stored = app_of(found)
        item = app_item(app)
        item["created_at"] = {"N": str(us(stored.created_at) if stored.created_at else 0)}
        self._u.put_again(item, condition="attribute_exists(pk)")

    async def delete(self, app_id: str) -> bool:
        """Remove the app and everything it owns (see the module's docstring)."""
        pk, sk = keys.app(app_id), keys.APP_ITEM
        earlier = self._u.pending(pk, sk)
        if earlier is not None and earlier.kind == "Delete":
            return False  # deleted by this unit already
        found = await self._u.get(pk, sk)
        if not self._u.writable:
            raise ReadOnly("this is a read-only unit of work")
        doomed: list[tuple[str, str]] = []
        async for item in self._u.table.query_all(keys.app_keys(app_id)):
            k = key_of(item)
            doomed += [(keys.key_hash(k.key_hash), keys.KEY_BY_HASH),
                       (keys.key_id(k.id), keys.KEY_BY_ID)]
        await self._u.table.delete_many(doomed)
        await asyncio.gather(*(_scan_delete(self._u.table, app_id, segment)
                               for segment in range(SCAN_SEGMENTS)))
        if found is not None:
            self._u.delete(pk, sk)
        return found is not None


async def _scan_delete(table: Table, app_id: str, segment: int) -> None:
    """Delete the app's items in one segment of the table, page by page."""
    client = await table.client()
    request: dict[str, Any] = {
        "TableName": table.name, "Segment": segment, "TotalSegments": SCAN_SEGMENTS,
        "ConsistentRead": True, "ProjectionExpression": "pk, sk",
        "FilterExpression": "begins_with(pk, :app) OR begins_with(pk, :idem)"
                            " OR (begins_with(pk, :ws) AND app_id = :id)",
        "ExpressionAttributeValues": {
            ":app": {"S": f"A#{app_id}#"}, ":idem": {"S": keys.idempotency_scope(app_id)},
            ":ws": {"S": keys.connection_pointer("")}, ":id": {"S": app_id}}}
    while True:
        answer = await client.scan(**request)
        await table.delete_many([(i["pk"]["S"], i["sk"]["S"]) for i in answer.get("Items", [])])
        start = answer.get("LastEvaluatedKey")
        if not start:
            return
        request["ExclusiveStartKey"] = start


class DynamoKeys:
    def __init__(self, unit: Unit) -> None:
        self._u = unit

    async def add(self, key: ApiKey) -> None:
        values = _key_values(key)
        for pk, sk in _key_copies(key):
            self._u.put(encode({"pk": pk, "sk": sk, **values}),
                        condition="attribute_not_exists(pk)", conflict=f"key {key.id} exists")

    async def by_hash(self, key_hash: str) -> ApiKey | None:
        item = await self._u.get(keys.key_hash(key_hash), keys.KEY_BY_HASH)
        return None if item is None else key_of(item)

    async def get(self, key_id: str) -> ApiKey | None:
        item = await self._u.get(keys.key_id(key_id), keys.KEY_BY_ID)
        return None if item is None else key_of(item)

    async def active(self, app_id: str | None) -> list[ApiKey]:
        """Unrevoked keys by id, as this unit leaves them."""
        found = []
        async for item in self._u.table.query_all(keys.app_keys(app_id)):
            mine = self._u.pending(item["pk"]["S"], item["sk"]["S"])
            if mine is not None:
                if mine.kind == "Delete":
                    continue
                item = mine.item or item
            k = key_of(item)
            if k.revoked_at is None:
                found.append(k)
        return found

    async def revoke(self, key_id: str, at: datetime) -> bool:
        found = await self.get(key_id)
        if found is None or found.revoked_at is not None:
            return False
        found.revoked_at = at
        values = _key_values(found)
        for pk, sk in _key_copies(found):
            self._u.put_again(encode({"pk": pk, "sk": sk, **values}),
                              condition="attribute_exists(pk)")
        return True
