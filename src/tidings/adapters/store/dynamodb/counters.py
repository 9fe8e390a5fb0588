"""Each user's counter item (`COUNT` in the user's partition): unread counts overall and per
channel, and the last number of the user's stream, all moved by one optimistic write per user
and unit of work (see unit.py). The stream events of the unit are numbered there too, from
the values read at commit, so that numbers follow commit order with no holes."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ....domain.notifications import CHANNEL_BITS
from ....domain.stream import StreamEvent
from . import keys
from .codec import at_us, decode, dumps, encode, us
from .unit import Unit

CHANNEL_ATTRIBUTES = {bit: f"unread_{channel.value}" for channel, bit in CHANNEL_BITS.items()}
COUNT_ATTRIBUTES = ("unread", *CHANNEL_ATTRIBUTES.values())
IN_APP_ATTRIBUTE = "unread_in_app"


@dataclass
class Values:
    counts: dict[str, int]
    seq: int
    version: int
    exists: bool

    def count(self, channel: str | None) -> int:
        if channel is None:
            return self.counts["unread"]
        return self.counts.get(f"unread_{channel}", 0)


def values_of(item: dict[str, Any] | None) -> Values:
    if item is None:
        return Values(dict.fromkeys(COUNT_ATTRIBUTES, 0), 0, 0, False)
    doc = decode(item)
    return Values({name: max(0, int(doc.get(name, 0))) for name in COUNT_ATTRIBUTES},
                  int(doc.get("seq", 0)), int(doc.get("version", 0)), True)


async def read(unit: Unit, app_id: str, user_id: str) -> Values:
    return values_of(await unit.table.get(keys.user(app_id, user_id), keys.COUNT))


@dataclass
class _Change:
    deltas: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_ATTRIBUTES, 0))
    zero: bool = False
    events: list[StreamEvent] = field(default_factory=list)


class Counters:
    """What one unit of work does to counters; written by its commit hook."""

    def __init__(self, unit: Unit, retention_seconds: int) -> None:
        self._unit = unit
        self._changes: dict[tuple[str, str], _Change] = defaultdict(_Change)
        self._retention = retention_seconds
        unit.before_commit(self._write)

    def move(self, app_id: str, user_id: str, mask: int, sign: int) -> None:
        """A notification sent on the channels of `mask` became unread (+1) or read (-1)."""
        change = self._changes[(app_id, user_id)]
        change.deltas["unread"] += sign
        for bit, name in CHANNEL_ATTRIBUTES.items():
            if mask & bit:
                change.deltas[name] += sign

    def zero(self, app_id: str, user_id: str) -> None:
        """A deleted user's counts go to 0; its stream number stays (see the SQL store)."""
        change = self._changes[(app_id, user_id)]
        change.zero = True
        change.deltas = dict.fromkeys(COUNT_ATTRIBUTES, 0)

    def stream(self, app_id: str, user_id: str, type_: str, data: dict[str, Any],
               at: datetime) -> StreamEvent:
        """A stream event, numbered (and given the counts after this unit) at commit."""
        event = StreamEvent(app_id, user_id, 0, type_, data, at)
        self._changes[(app_id, user_id)].events.append(event)
        return event

    def snapshot(self, groups: frozenset[str]) -> dict[str, Any]:
        """What this unit does to the counters of `groups`, as plain data (journal.py): the
        changes, not the values, which are read again when they are written."""
        return {"retention": self._retention, "changes": [
            {"app": app, "user": user, "deltas": change.deltas, "zero": change.zero,
             "events": [[e.type, e.data, us(e.at)] for e in change.events]}
            for (app, user), change in sorted(self._changes.items())
            if keys.user(app, user) in groups]}

    def unnumber(self, groups: frozenset[str]) -> None:
        """Events of `groups` that did not commit go back to the number 0 (not published)."""
        for (app, user), change in self._changes.items():
            if keys.user(app, user) in groups:
                for event in change.events:
                    object.__setattr__(event, "seq", 0)

    @staticmethod
    def restore(unit: Unit, snapshot: dict[str, Any]) -> None:
        """Make `snapshot`'s changes the unit's (a journal's piece done again)."""
        counters = counters_of(unit, int(snapshot["retention"]))
        for c in snapshot["changes"]:
            change = counters._changes[(c["app"], c["user"])]
            change.deltas = {name: int(c["deltas"].get(name, 0)) for name in COUNT_ATTRIBUTES}
            change.zero = bool(c["zero"])
            change.events = [StreamEvent(c["app"], c["user"], 0, type_, data, _at(at))
                             for type_, data, at in c["events"]]

    async def _write(self, unit: Unit, groups: frozenset[str] | None) -> None:
        ordered = [k for k in sorted(self._changes)
                   if groups is None or keys.user(*k) in groups]
        if not ordered:
            return
        found = await unit.table.get_many(
            [(keys.user(app, user), keys.COUNT) for app, user in ordered])
        by_pk = {item["pk"]["S"]: item for item in found}
        for app_id, user_id in ordered:
            change = self._changes[(app_id, user_id)]
            pk = keys.user(app_id, user_id)
            now = values_of(by_pk.get(pk))
            base = dict.fromkeys(COUNT_ATTRIBUTES, 0) if change.zero else now.counts
            counts = {name: max(0, base[name] + change.deltas[name]) for name in COUNT_ATTRIBUTES}
            seq = now.seq
            for event in change.events:
                seq += 1
                # The event objects were handed out before commit: they get their number now.
                object.__setattr__(event, "seq", seq)
                object.__setattr__(event, "unread", counts["unread"])
                object.__setattr__(event, "unread_in_app", counts[IN_APP_ATTRIBUTE])
                unit.put(encode({
                    "pk": keys.stream(app_id, user_id), "sk": keys.num(seq, 12),
                    "app_id": app_id, "user_id": user_id, "seq": seq, "type": event.type,
                    "data": dumps(event.data), "at": us(event.at),
                    "ttl": int(event.at.timestamp()) + self._retention,
                    **index_keys(app_id, user_id, event.at)}), optimistic=True, group=pk)
            item = encode({"pk": pk, "sk": keys.COUNT, "app_id": app_id, "user_id": user_id,
                           **counts, "seq": seq, "version": now.version + 1})
            if now.exists:
                unit.put(item, condition="version = :v", values={":v": {"N": str(now.version)}},
                         optimistic=True)
            else:
                unit.put(item, condition="attribute_not_exists(pk)", optimistic=True)


def index_keys(app_id: str, user_id: str, at: datetime) -> dict[str, str]:
    """The gsi2 keys of a stream event: its UTC day's partition (spread over shards by user),
    by time, which is how the stream's purge finds old events without a scan."""
    day = at.astimezone(UTC).date().isoformat()
    return {"gsi2pk": keys.stream_day(day, keys.stream_shard(app_id, user_id)),
            "gsi2sk": keys.num(us(at))}


def counters_of(unit: Unit, retention_seconds: int = 7 * 24 * 3600) -> Counters:
    """The unit's one Counters (made on first use)."""
    found = unit.shared.get("counters")
    if not isinstance(found, Counters):
        found = unit.shared["counters"] = Counters(unit, retention_seconds)
    return found


def _at(value: int) -> datetime:
    found = at_us(value)
    assert found is not None
    return found
