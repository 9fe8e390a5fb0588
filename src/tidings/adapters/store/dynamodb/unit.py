"""One unit of work on DynamoDB: reads go to the table at once (strongly consistent on the
table, eventually on the indexes), writes wait in a buffer and commit together in one
TransactWriteItems at the end, so a failure before the end writes nothing.

Counters (unread counts, a user's stream numbers) cannot be read and written back in one
DynamoDB call with their new values returned, so they are *optimistic*: a hook reads them at
commit time, writes the new values on the condition that nobody moved them meanwhile, and when
somebody did (the transaction is cancelled on that condition alone), the hook runs again on
fresh values and the transaction is retried. Nothing else in the unit depends on those values
but what the hook itself writes.

A unit larger than one transaction (100 writes, 4 MB) commits in several, cut by pieces.py:
each recipient's writes (notification, deliveries, counter, stream events) whole in one of
them. A send is journaled (journal.py): its first transaction decides, and whoever finds it
unfinished finishes it. Other large units (a broadcast batch, a read-all, a delete) commit the
writes that mark them done (`last`: a broadcast's cursor) in their last transaction, and a
unit cut off midway is done again by its caller (docs/dynamodb.md, "Large units")."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from ....domain.errors import StoreConflict
from .codec import Item
from .pieces import TooLarge, fits_one, pieces, size_of
from .table import Table, key

# A hook writes the optimistic items of the groups named (None: of every group it has).
Hook = Callable[["Unit", "frozenset[str] | None"], Awaitable[None]]
# Enough for a burst of writers on one user's counters; each round rereads them.
OPTIMISTIC_ROUNDS = 12
# Transactions of one unit in flight at once.
PIECES_AT_ONCE = 8
# Queries or conditional updates in flight at once for one call of a repository.
CONCURRENCY = 16
A = TypeVar("A")
T = TypeVar("T")


class ReadOnly(RuntimeError):
    pass


@dataclass
class Write:
    kind: str  # Put, Update, Delete, ConditionCheck
    request: dict[str, Any]
    conflict: str | None = None  # StoreConflict message when its condition fails
    optimistic: bool = False
    # Put: the item as it will be, for reads through this unit before it commits.
    item: Item | None = None
    # Optimistic writes of one group commit in one transaction and are made again together
    # when one of them meets a moved item (a user's counter item and its stream events).
    # Of a unit too large for one transaction, each group commits whole in one (pieces.py).
    group: str | None = None
    # Commits in the unit's last transaction: the write that says the unit is done.
    last: bool = False

    @cached_property
    def size(self) -> int:
        return size_of(self.request)


@dataclass
class Unit:
    table: Table
    writable: bool
    _writes: dict[tuple[str, str], Write] = field(default_factory=dict)
    # The optimistic ones among them (a few a recipient), found without reading all.
    _optimistic: dict[tuple[str, str], Write] = field(default_factory=dict)
    _hooks: list[Hook] = field(default_factory=list)
    _after: list[Callable[[], None]] = field(default_factory=list)
    # What the repositories of this unit share (the counters' changes, by name).
    shared: dict[str, Any] = field(default_factory=dict)

    # Reads, seeing this unit's own puts and deletes ---------------------------------------

    async def get(self, pk: str, sk: str) -> Item | None:
        write = self._writes.get((pk, sk))
        if write is not None:
            if write.kind == "Delete":
                return None
            if write.item is not None:
                return write.item
        return await self.table.get(pk, sk)

    def pending(self, pk: str, sk: str) -> Write | None:
        return self._writes.get((pk, sk))

    # Writes -------------------------------------------------------------------------------

    def put(self, item: Item, *, condition: str | None = None,
            values: dict[str, Any] | None = None, names: dict[str, str] | None = None,
            conflict: str | None = None, optimistic: bool = False,
            group: str | None = None, last: bool = False) -> None:
        request: dict[str, Any] = {"TableName": self.table.name, "Item": item}
        _expr(request, condition, values, names)
        pk = item["pk"]["S"]
        self._add(pk, item["sk"]["S"],
                  Write("Put", request, conflict, optimistic, item, group or pk, last))

    def put_again(self, item: Item, *, condition: str, values: dict[str, Any] | None = None,
                  names: dict[str, str] | None = None, conflict: str | None = None,
                  last: bool = False) -> None:
        """Put `item` on `condition`; or, when this unit already wrote it, plainly: the first
        write's condition is the one that holds (`_add` keeps a first put's)."""
        if self.pending(item["pk"]["S"], item["sk"]["S"]) is not None:
            self.put(item, last=last)
        else:
            self.put(item, condition=condition, values=values, names=names, conflict=conflict,
                     last=last)

    def update(self, pk: str, sk: str, expression: str, *, values: dict[str, Any] | None = None,
               names: dict[str, str] | None = None, condition: str | None = None,
               conflict: str | None = None, optimistic: bool = False,
               group: str | None = None, last: bool = False) -> None:
        request: dict[str, Any] = {"TableName": self.table.name, "Key": key(pk, sk),
                                   "UpdateExpression": expression}
        _expr(request, condition, values, names)
        self._add(pk, sk, Write("Update", request, conflict, optimistic, group=group or pk,
                                last=last))

    def delete(self, pk: str, sk: str, *, condition: str | None = None,
               values: dict[str, Any] | None = None, names: dict[str, str] | None = None,
               conflict: str | None = None, group: str | None = None) -> None:
        request: dict[str, Any] = {"TableName": self.table.name, "Key": key(pk, sk)}
        _expr(request, condition, values, names)
        self._add(pk, sk, Write("Delete", request, conflict, group=group or pk))

    def check(self, pk: str, sk: str, condition: str, *, values: dict[str, Any] | None = None,
              names: dict[str, str] | None = None, conflict: str | None = None,
              group: str | None = None) -> None:
        """Commit only if `condition` holds on that item (which this unit does not write)."""
        request: dict[str, Any] = {"TableName": self.table.name, "Key": key(pk, sk)}
        _expr(request, condition, values, names)
        self._add(pk, sk, Write("ConditionCheck", request, conflict, group=group or pk))

    def before_commit(self, hook: Hook) -> None:
        """Run `hook` at commit (again on each optimistic retry) to add optimistic writes."""
        if not self.writable:
            raise ReadOnly("this is a read-only unit of work")
        self._hooks.append(hook)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the unit is committed; a journaled unit (journal.py) is then
        durable, though pieces of it may still wait for the recovery."""
        self._after.append(callback)

    def _add(self, pk: str, sk: str, write: Write) -> None:
        if not self.writable:
            raise ReadOnly("this is a read-only unit of work")
        earlier = self._writes.get((pk, sk))
        if earlier is not None and not (write.kind in ("Put", "Delete")
                                        and earlier.kind in ("Put", "Delete")
                                        and not earlier.optimistic):
            # DynamoDB refuses two operations on one item in a transaction; a put or delete
            # may replace an earlier put or delete, nothing else can be merged safely.
            raise RuntimeError(f"two writes of the item ({pk}, {sk}) in one unit of work")
        if earlier is not None and earlier.kind == "Put" and write.kind == "Put" and \
                "ConditionExpression" in earlier.request and "ConditionExpression" not in write.request:
            # A second put of an item first put under a condition keeps that condition.
            for name in ("ConditionExpression", "ExpressionAttributeValues",
                         "ExpressionAttributeNames"):
                if name in earlier.request:
                    write.request[name] = earlier.request[name]
            write.conflict = write.conflict or earlier.conflict
        self._writes[(pk, sk)] = write
        if write.optimistic:
            self._optimistic[(pk, sk)] = write

    # Commit -------------------------------------------------------------------------------

    async def commit(self) -> None:
        if not self._writes and not self._hooks:
            return
        from . import journal  # which builds on this module

        client = await self.table.client()
        await self._run_hooks(None)
        writes = list(self._writes.values())
        try:
            await self._commit(client, writes, journal.commit)
        except TooLarge as exc:
            # Before anything is written: a caller that batches (the group commit of sends)
            # then commits its requests apart.
            raise StoreConflict(f"too much for one unit of work on DynamoDB ({exc})") from exc
        for callback in self._after:
            callback()

    async def _commit(self, client: Any, writes: list[Write],
                      journaled: Callable[[Unit, Any, list[Write]], Awaitable[bool]]) -> None:
        if fits_one(writes):
            # The usual unit: everything in one transaction, made again while counters move.
            await self._transact_optimistic(client, [w for w in writes if not w.optimistic], None)
        elif await journaled(self, client, writes):
            pass  # every piece committed, or left to finish to whoever recovers the journal
        else:
            # The conditions of the writes that commit last are checked in every transaction
            # before: a unit that will fail at the end (its idempotency key taken, its lease
            # lost) stops at its next transaction rather than writing on to the end.
            guards = [_guard(w) for w in writes if w.last and not w.optimistic
                      and "ConditionExpression" in w.request]
            cut = pieces(writes, reserve=len(guards))

            async def one(piece: list[Write], checks: list[Write]) -> None:
                await self._transact_optimistic(
                    client, [w for w in piece if not w.optimistic] + checks,
                    frozenset(w.group for w in piece if w.optimistic and w.group is not None))

            # The pieces touch different items: all but the last at once, then the last.
            await at_most(PIECES_AT_ONCE, [one(piece, guards) for piece in cut[:-1]])
            await one(cut[-1], [])

    def unnumber(self, groups: frozenset[str]) -> None:
        """The stream events of `groups` did not commit (yet): they lose the numbers the
        hooks gave them, which others may take meanwhile (journal.py)."""
        for hook in self._hooks:
            unnumber = getattr(getattr(hook, "__self__", None), "unnumber", None)
            if unnumber is not None:
                unnumber(groups)

    def snapshot(self, groups: frozenset[str]) -> list[Any] | None:
        """What the commit hooks would write for `groups`, as plain data (journal.py); None
        when a hook cannot say."""
        found = []
        for hook in self._hooks:
            owner = getattr(hook, "__self__", None)
            snapshot = getattr(owner, "snapshot", None)
            if snapshot is None:
                return None
            found.append(snapshot(groups))
        return found

    async def transact(self, client: Any, plain: list[Write],
                       groups: frozenset[str] | None) -> None:
        """Commit `plain` with the optimistic writes of `groups` (None: all) in one
        transaction, the hooks having run (see `_transact_optimistic`)."""
        await self._transact_optimistic(client, plain, groups)

    async def run_hooks(self) -> None:
        await self._run_hooks(None)

    async def _transact_optimistic(self, client: Any, plain: list[Write],
                                   groups: frozenset[str] | None) -> None:
        """Commit `plain` with the optimistic writes of `groups` (None: all), making those
        again from fresh reads until nobody moved their items in between."""
        for attempt in range(OPTIMISTIC_ROUNDS):
            writes = [w for w in self._optimistic.values() if groups is None or w.group in groups]
            try:
                await self._transact(client, plain + writes, optimistic_retry=True)
                return
            except _Moved:
                await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
                await self._run_hooks(groups)
        raise StoreConflict("too many concurrent changes to the same counters; try again")

    async def _run_hooks(self, groups: frozenset[str] | None) -> list[Write]:
        for k in [k for k, w in self._optimistic.items() if groups is None or w.group in groups]:
            del self._writes[k]
            del self._optimistic[k]
        for hook in self._hooks:
            await hook(self, groups)
        return list(self._optimistic.values())

    async def _transact(self, client: Any, writes: list[Write], *,
                        optimistic_retry: bool = False) -> None:
        if not writes:
            return
        items = [{w.kind: w.request} for w in writes]
        for attempt in range(6):
            try:
                await client.transact_write_items(TransactItems=items)
                return
            except client.exceptions.TransactionCanceledException as exc:
                reasons = [r.get("Code", "None") for r in
                           exc.response.get("CancellationReasons", [])]
                failed = [(w, code) for w, code in zip(writes, reasons, strict=False)
                          if code not in ("None", None)]
                for w, code in failed:
                    if code == "ConditionalCheckFailed" and not w.optimistic:
                        raise StoreConflict(w.conflict or "the item changed meanwhile") from exc
                if optimistic_retry and any(code == "ConditionalCheckFailed" for _, code in failed):
                    raise _Moved from exc
                if any(code not in ("TransactionConflict", "ThrottlingError",
                                    "ProvisionedThroughputExceeded") for _, code in failed):
                    raise
            except client.exceptions.TransactionConflictException:
                pass
            await asyncio.sleep(random.uniform(0, 0.01 * 2 ** attempt))
        raise StoreConflict("the table was too busy with the same items; try again")


async def gather_bounded(call: Callable[[A], Awaitable[T]], args: Sequence[A],
                         limit: int = CONCURRENCY) -> list[T]:
    """`call` on each of `args` concurrently, at most `limit` at a time; results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(arg: A) -> T:
        async with gate:
            return await call(arg)

    return list(await asyncio.gather(*(one(a) for a in args)))


async def at_most(limit: int, calls: list[Awaitable[None]]) -> None:
    """Await `calls`, `limit` at a time, every one to its end (none is left running), then
    raise the first error."""
    errors = [e for e in await settle(limit, calls) if e is not None]
    if errors:
        raise errors[0]


async def settle(limit: int, calls: list[Awaitable[None]]) -> list[BaseException | None]:
    """Await `calls`, `limit` at a time, every one to its end; what each raised (None: it
    did not), in order."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[None]) -> None:
        async with gate:
            await call

    done = await asyncio.gather(*map(one, calls), return_exceptions=True)
    return [d if isinstance(d, BaseException) else None for d in done]


def _guard(write: Write) -> Write:
    """A ConditionCheck of `write`'s condition, on its item, with only the names and values
    the condition uses (DynamoDB refuses unused ones)."""
    request = write.request
    condition = request["ConditionExpression"]
    used = set(_TOKEN.findall(condition))
    check: dict[str, Any] = {
        "TableName": request["TableName"],
        "Key": request.get("Key") or key(request["Item"]["pk"]["S"], request["Item"]["sk"]["S"]),
        "ConditionExpression": condition}
    for name in ("ExpressionAttributeValues", "ExpressionAttributeNames"):
        kept = {k: v for k, v in request.get(name, {}).items() if k in used}
        if kept:
            check[name] = kept
    return Write("ConditionCheck", check, write.conflict)


_TOKEN = re.compile(r"[:#][A-Za-z0-9_]+")


class _Moved(Exception):
    """An optimistic condition failed: somebody moved the counters; read them again."""


def _expr(request: dict[str, Any], condition: str | None, values: dict[str, Any] | None,
          names: dict[str, str] | None) -> None:
    if condition:
        request["ConditionExpression"] = condition
    if values:
        request["ExpressionAttributeValues"] = values
    if names:
        request["ExpressionAttributeNames"] = names
