"""Each user's numbered stream of inbox changes on DynamoDB.

The events are items of the user's stream partition (`keys.stream`, sk = the number, padded),
numbered at commit by the user's counter item (counters.py): an optimistic write that fails
when another unit numbered events of the user meanwhile, so numbers follow commit order with
no holes. The service reads the events' numbers only after the commit.

Forgetting old events: every event carries `ttl` (DynamoDB deletes it some time after that,
lazily), and `purge(before)` deletes what is older than `before` at once, as the port says.
Events are listed for it in sparse gsi2 partitions, one per UTC day and shard
(`keys.stream_day`): purge reads the days from the first one it has not finished
(`keys.STREAM_PURGE`) up to `before`'s, and deletes what they list before `before`. A user's
partition cannot be found from the time alone, and a Scan of the table would read everything."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from ....domain.stream import StreamEvent, StreamHead
from ....ports import StreamEntry
from . import keys
from .codec import Item, at_us, encode, loads, us
from .counters import IN_APP_ATTRIBUTE, counters_of, read
from .unit import Unit

SEQ_WIDTH = 12
_LAST = keys.num(10**SEQ_WIDTH - 1, SEQ_WIDTH)
PURGE_SK = "P"
# The first purge of a table looks back this far: older events are past their `ttl` (a week
# after the event), which DynamoDB acts on within days.
FIRST_LOOKBACK = timedelta(days=10)
# A purge stops after the day where it passed this many events; the next goes on from there.
PURGE_BATCH = 10_000


def _event_of(app_id: str, user_id: str, item: Item) -> StreamEvent:
    at = at_us(int(item["at"]["N"]))
    assert at is not None
    return StreamEvent(app_id, user_id, int(item["seq"]["N"]), item["type"]["S"],
                       loads(item["data"]["S"]) or {}, at)


class DynamoStream:
    def __init__(self, unit: Unit) -> None:
        self._u = unit

    async def append(self, app_id: str, entries: Sequence[StreamEntry],
                     at: datetime) -> list[StreamEvent]:
        if not entries:
            return []
        skipped = self._u.shared.get("skipped", ())
        if skipped:  # notifications add_many left out (notifications.py): nothing to report
            entries = [e for e in entries if e.data.get("id") not in skipped]
        counters = counters_of(self._u)  # its commit hook numbers and writes the events
        return [counters.stream(app_id, e.user_id, e.type, dict(e.data), at) for e in entries]

    async def since(self, app_id: str, user_id: str, after: int, upto: int | None,
                    limit: int) -> list[StreamEvent]:
        if limit <= 0 or (upto is not None and upto <= after):
            return []
        items = await self._u.table.query_until(
            keys.stream(app_id, user_id), limit, sk_from=keys.num(after + 1, SEQ_WIDTH),
            sk_to=_LAST if upto is None else keys.num(upto, SEQ_WIDTH))
        return [_event_of(app_id, user_id, i) for i in items]

    async def head(self, app_id: str, user_id: str) -> StreamHead:
        values, (first, _) = await asyncio.gather(
            read(self._u, app_id, user_id),
            self._u.table.query(keys.stream(app_id, user_id), limit=1))
        oldest = int(first[0]["seq"]["N"]) if first else values.seq + 1
        return StreamHead(values.seq, values.count(None), values.counts[IN_APP_ATTRIBUTE], oldest)

    async def purge(self, before: datetime) -> int:
        cutoff = keys.num(us(before) - 1)
        last = before.astimezone(UTC).date()
        marker = await self._u.get(keys.STREAM_PURGE, PURGE_SK)
        day = (date.fromisoformat(marker["day"]["S"]) if marker is not None
               else (before - FIRST_LOOKBACK).astimezone(UTC).date())
        count = 0
        while day <= last:
            found = await asyncio.gather(*(self._listed(day, shard, cutoff)
                                           for shard in range(keys.STREAM_SHARDS)))
            for items in found:
                for item in items:
                    self._u.delete(item["pk"]["S"], item["sk"]["S"])
                    count += 1
            if count >= PURGE_BATCH:
                break
            day += timedelta(days=1)
        # Days before this one hold nothing older than `before` any more.
        self._u.put(encode({"pk": keys.STREAM_PURGE, "sk": PURGE_SK, "day": min(day, last).isoformat()}))
        return count

    async def _listed(self, day: date, shard: int, cutoff: str) -> list[Item]:
        return [i async for i in self._u.table.query_all(
            keys.stream_day(day.isoformat(), shard), index="gsi2", sk_to=cutoff)]


__all__ = ["DynamoStream"]
