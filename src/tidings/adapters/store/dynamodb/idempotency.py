"""Idempotency records on DynamoDB.

A record is one item (pk = `keys.idempotency(scope, key)`) whose `ttl` attribute is its
expiry: DynamoDB's TTL deletes it some time after (within days, not at once). Until then an
expired record is still read: `get` returns it with its `expires_at`, which the caller compares
with its clock (service.idempotency treats it as absent), and `put` replaces it: its condition
lets a new record in where none is or where the one there has expired. `purge` finds expired
records through the sparse `gsi1` partition `keys.EXPIRING_IDEMPOTENCY`, by expiry."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from ....domain.errors import IdempotencyRace
from ....domain.idempotency import IdempotencyRecord
from . import keys
from .codec import Item, at_us, decode, encode, us
from .queue import oldest
from .unit import Unit

# Records a purge forgets at most in one unit of work (TTL deletes the others in time anyway).
PURGE_LIMIT = 1000
TAKEN = "idempotency key taken"
_EXPIRED = "attribute_not_exists(pk) OR expires_at <= :now"


def record_item(r: IdempotencyRecord) -> Item:
    expires = us(r.expires_at)
    item = encode({
        "pk": keys.idempotency(r.scope, r.key), "sk": keys.IDEMPOTENCY_ITEM,
        "scope": r.scope, "key": r.key, "fingerprint": r.fingerprint,
        "status_code": r.status_code, "created_at": us(r.created_at), "expires_at": expires,
        "ttl": math.ceil(expires / 1_000_000),
        "gsi1pk": keys.sharded(keys.EXPIRING_IDEMPOTENCY, f"{r.scope}#{r.key}"),
        "gsi1sk": keys.due(expires, keys.part(r.scope), keys.part(r.key))})
    item["body"] = {"B": bytes(r.body)}
    return item


def record_of(item: Item) -> IdempotencyRecord:
    body = item["body"]["B"]
    v = decode({k: a for k, a in item.items() if k != "body"})
    created, expires = at_us(v["created_at"]), at_us(v["expires_at"])
    assert created is not None and expires is not None
    return IdempotencyRecord(v["scope"], v["key"], v["fingerprint"], int(v["status_code"]),
                             bytes(body), created, expires)


def _expires(item: Item) -> int:
    return int(item["expires_at"]["N"])


class DynamoIdempotency:
    def __init__(self, unit: Unit) -> None:
        self._u = unit

    async def get(self, scope: str, key: str) -> IdempotencyRecord | None:
        item = await self._u.get(keys.idempotency(scope, key), keys.IDEMPOTENCY_ITEM)
        return None if item is None else record_of(item)

    async def put(self, record: IdempotencyRecord) -> None:
        """IdempotencyRace when an unexpired record holds the key; a twin committing between
        this read and the commit makes the commit fail with StoreConflict instead (the
        caller's retry then reads the twin's record and gets IdempotencyRace)."""
        item = record_item(record)
        pk, sk = item["pk"]["S"], item["sk"]["S"]
        now = us(record.created_at)
        found = await self._u.get(pk, sk)
        if found is not None and _expires(found) > now:
            raise IdempotencyRace(TAKEN)
        # `last`: the record says its unit is done (unit.py; journal.py commits it first).
        self._u.put_again(item, condition=_EXPIRED, values={":now": {"N": str(now)}},
                          conflict=TAKEN, last=True)

    async def purge(self, now: datetime) -> int:
        bound = us(now)
        seen = await oldest(self._u, keys.EXPIRING_IDEMPOTENCY, bound + 1, PURGE_LIMIT)
        # The index lags and a key may have been taken again since: the table decides.
        wanted = [(i["pk"]["S"], i["sk"]["S"]) for i in seen]
        stored = {(i["pk"]["S"], i["sk"]["S"]): i for i in await self._u.table.get_many(wanted)}
        purged = 0
        for pk, sk in wanted:
            earlier = self._u.pending(pk, sk)
            item: Item | None = stored.get((pk, sk))
            if earlier is not None:
                item = None if earlier.kind == "Delete" else earlier.item
            if item is None or _expires(item) > bound:
                continue
            condition: dict[str, Any] = {} if earlier is not None else {
                "condition": "expires_at <= :now", "values": {":now": {"N": str(bound)}},
                "conflict": "an idempotency key was taken again while it was purged"}
            self._u.delete(pk, sk, **condition)
            purged += 1
        return purged
