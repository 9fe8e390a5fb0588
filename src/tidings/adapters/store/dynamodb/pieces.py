"""How the writes of a unit of work too large for one DynamoDB transaction are cut into
transactions (DynamoDB takes at most 100 actions and 4 MB of items in one).

Each write has a *group*: the writes that must commit together (a recipient's inbox item,
pointer, deliveries, broadcast reservation, counter item and stream events are one group, the
recipient's). A group goes whole into one transaction, so every transaction leaves each
recipient either with all of its notification, counts and stream events, or with none of it,
and the counts always agree with the inbox. Only a group larger than one transaction (a user
delete's hundreds of deletes) is split: its plain writes fill transactions of their own, its
optimistic ones (counter, events) go with the last of them.

Writes marked `last` (an idempotency record, a broadcast's cursor: what says the unit is done)
go in the last transaction, so that a unit cut off between two transactions is not recorded as
done and the caller's retry writes what is missing."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import orjson

MAX_ITEMS = 100
# Of DynamoDB's 4 MB per transaction, counted as the requests' JSON (a little more than
# DynamoDB counts, never less).
MAX_BYTES = 3_800_000
# DynamoDB's limit on one item.
MAX_ITEM_BYTES = 400 * 1024


class Sized(Protocol):
    group: str | None
    optimistic: bool
    last: bool

    @property
    def size(self) -> int: ...


W = TypeVar("W", bound=Sized)


class TooLarge(Exception):
    """A unit that cannot be cut into transactions (too many writes that must commit
    together): the caller commits less at once."""


def size_of(value: Any) -> int:
    """An upper bound of what DynamoDB counts for `value` (an item or a request in the wire
    format): its length as JSON, which holds every name and value (strings as UTF-8, a binary
    value as one character a byte) and a little punctuation besides."""
    return len(orjson.dumps(value, default=_as_long_as))


def _as_long_as(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return "b" * len(value)
    raise TypeError(f"{type(value).__name__} is not a DynamoDB value")


def fits_one(writes: Sequence[Sized]) -> bool:
    return len(writes) <= MAX_ITEMS and sum(w.size for w in writes) <= MAX_BYTES


def pieces(writes: Iterable[W], reserve: int = 0) -> list[list[W]]:
    """The writes cut into transactions: groups whole (see the module), in the order of their
    first write, and `last` writes in the last transaction; `reserve` actions of each
    transaction are left free (for the checks unit.py adds)."""
    if reserve >= MAX_ITEMS:
        raise TooLarge(f"{reserve} checks leave no room in a transaction")
    groups: dict[str | None, list[W]] = {}
    last: list[W] = []
    for w in writes:
        if w.last:
            last.append(w)
        else:
            groups.setdefault(w.group, []).append(w)
    cut: _Cut[W] = _Cut(MAX_ITEMS - reserve)
    for members in groups.values():
        if not cut.fits(members):
            cut.next()
        if cut.fits(members):
            cut.add(members)
            continue
        # Larger than a transaction: its plain writes fill transactions one by one, then its
        # optimistic ones go together into one (they are made again together, unit.py).
        for w in members:
            if not w.optimistic:
                if not cut.fits([w]):
                    cut.next()
                cut.add([w])
        block = [w for w in members if w.optimistic]
        if block:
            if not cut.fits(block):
                cut.next()
            if not cut.fits(block):
                raise TooLarge(f"{len(block)} counter and stream writes of one user exceed "
                               "one transaction")
            cut.add(block)
    if last:
        if not cut.fits(last):
            cut.next()
        if not cut.fits(last):
            raise TooLarge(f"{len(last)} writes that must commit last exceed one transaction")
        cut.add(last)
    return [p for p in cut.done if p]


class _Cut(Generic[W]):
    def __init__(self, items: int) -> None:
        self.items = items
        self.done: list[list[W]] = [[]]
        self.count = 0
        self.bytes = 0

    def fits(self, writes: Sequence[W]) -> bool:
        return (self.count + len(writes) <= self.items
                and self.bytes + sum(w.size for w in writes) <= MAX_BYTES)

    def add(self, writes: Sequence[W]) -> None:
        self.done[-1].extend(writes)
        self.count += len(writes)
        self.bytes += sum(w.size for w in writes)

    def next(self) -> None:
        if self.done[-1]:
            self.done.append([])
            self.count = self.bytes = 0


__all__ = ["MAX_BYTES", "MAX_ITEMS", "MAX_ITEM_BYTES", "TooLarge", "fits_one", "pieces", "size_of"]
