"""A unit of work too large for one DynamoDB transaction (a send to many users) made
all-or-nothing in the end: its plan is written first, and whoever finds it unfinished finishes it.

1. The first transaction writes the *journal*: a head item (`keys.journal(id)`, sk `H`: how
   many pieces, a lease) and the plan, compressed, in chunks of at most 350 KB
   (sk `C#0000`, ...): for each piece (pieces.py) its plain writes as DynamoDB requests and
   what it does to counters (counters.py `snapshot`: the changes, not the values). With it go
   the writes that say the unit is done (`last`: its idempotency records), conditions and all.
   If that transaction fails, nothing is written; once it commits, the unit will be whole.
2. Each piece then commits in its own transaction with a marker item of its own (sk `P#<n>`),
   put on the condition that there is none: a piece commits exactly once, even if two writers
   are at it (one that finds the marker there skips the piece: the other did it). Pieces
   touch different items (each recipient is in one), so they commit concurrently,
   PIECES_AT_ONCE at a time.
3. At the end the plan's chunks are deleted and the head leaves the index. The head and the
   markers stay until their `ttl` (KEEP): a writer paused past its lease that wakes after a
   recovery finished its unit still finds every marker, and writes nothing twice.

A writer that dies (a Lambda cut off at its timeout, a process killed) or meets an error it
cannot wait out leaves the journal in the sparse gsi1 partition `keys.JOURNALS`, due when its
lease ends (LEASE after it was written). `recover` takes such a journal under a new lease and
commits the pieces not done, each from its plan, the counters read afresh. The housekeeping of
the worker and the AWS scheduler call it.

Only units whose every conditional write is a `last` one are journaled: their pieces cannot
fail on a condition, so finishing them later is always right. Others (a broadcast batch, whose
reservations are conditional, finds what it reached when done again) commit in plain pieces.
The journal costs its own writes: 4-6 % more bytes written by a large send
(bench/dynamodb_units.py)."""

from __future__ import annotations

import base64
import logging
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from ....domain.errors import StoreConflict
from . import keys
from .codec import Item, decode, encode, us
from .counters import Counters
from .pieces import MAX_BYTES, MAX_ITEMS, TooLarge, pieces

if TYPE_CHECKING:
    from .table import Table
    from .unit import Unit, Write

log = logging.getLogger("tidings.store.dynamodb")

HEAD = "H"
CHUNK_BYTES = 350_000
PIECES_AT_ONCE = 8
# A journal's writer has this long before anyone else may finish its unit.
LEASE = timedelta(minutes=2)
# DynamoDB deletes a journal item this long after it was written, should nothing else do it.
KEEP = timedelta(days=7)
DONE_BY_ANOTHER = "this piece of the journal's unit was committed by another writer"


def _chunk_sk(n: int) -> str:
    return f"C#{n:04d}"


def _done_sk(n: int) -> str:
    # Not `D#`: the table stream's filter takes items under `D#` for deliveries.
    return f"P#{n:04d}"


async def commit(unit: Unit, client: Any, writes: list[Write]) -> bool:
    """Commit `writes` (more than one transaction holds) under a journal; False, having
    written nothing, when the unit cannot be journaled (see the module)."""
    if any(not w.optimistic and not w.last and "ConditionExpression" in w.request
           for w in writes):
        return False
    first = [w for w in writes if w.last]
    cut = pieces([w for w in writes if not w.last], reserve=1)
    plan: list[dict[str, Any]] = []
    for piece in cut:
        groups = frozenset(w.group for w in piece if w.optimistic and w.group is not None)
        hooks = unit.snapshot(groups)
        if hooks is None:
            return False
        plan.append({"writes": [[w.kind, w.request, w.conflict]
                                for w in piece if not w.optimistic],
                     "groups": sorted(groups), "hooks": hooks})
    blob = zlib.compress(orjson.dumps(plan, default=_b64), 6)
    chunks = [blob[at:at + CHUNK_BYTES] for at in range(0, len(blob), CHUNK_BYTES)]
    if 1 + len(chunks) + len(first) > MAX_ITEMS or \
            len(blob) + sum(w.size for w in first) + 1000 > MAX_BYTES:
        if len(first) > 1:
            # Several requests (a group commit): each alone may be journaled. Refused before
            # anything is written, the caller commits them apart.
            raise TooLarge(f"{len(first)} requests whose plan takes {len(blob)} bytes")
        log.warning("a unit of %d writes is too large to journal (%d bytes compressed); "
                    "committing it in pieces without one", len(writes), len(blob))
        return False
    from .unit import Write, settle  # unit.py imports this module when it commits

    table = unit.table
    journal_id = uuid.uuid4().hex
    pk = keys.journal(journal_id)
    now = datetime.now(UTC)
    until = now + LEASE
    expires = int((now + KEEP).timestamp())
    head = encode({"pk": pk, "sk": HEAD, "journal_id": journal_id, "pieces": len(cut),
                   "chunks": len(chunks), "created_at": us(now),
                   "lease_until": us(until), "ttl": expires, "gsi1pk": keys.JOURNALS,
                   "gsi1sk": keys.due(us(until), journal_id)})
    items = [head] + [encode({"pk": pk, "sk": _chunk_sk(n), "ttl": expires, "plan": chunk})
                      for n, chunk in enumerate(chunks)]
    opening = [Write("Put", {"TableName": table.name, "Item": item}) for item in items]
    # The idempotency records commit with the journal: from here on the unit will be whole,
    # and a retry of the request is answered as done.
    await unit.transact(client, opening + first, frozenset())

    async def one(n: int) -> None:
        piece = cut[n]
        groups = frozenset(w.group for w in piece if w.optimistic and w.group is not None)
        await _piece(unit, client, [*(w for w in piece if not w.optimistic),
                                    _marker(Write, table.name, pk, n, expires)], groups)

    outcomes = await settle(PIECES_AT_ONCE, [one(n) for n in range(len(cut))])
    failed = [n for n, exc in enumerate(outcomes) if exc is not None]
    if failed:
        # The unit is durable since the opening: reporting a failure now would make the
        # caller write it again (a group commit splits its batch on a conflict). What did
        # not commit is left to the recovery. Its stream events lose their numbers (another
        # unit may take them meanwhile), and the service does not publish them.
        errors = [exc for exc in outcomes if exc is not None]
        unit.unnumber(frozenset(w.group for n in failed for w in cut[n]
                                if w.optimistic and w.group is not None))
        for exc in errors:
            if not isinstance(exc, Exception):
                raise exc
        log.error("journal %s: %d of %d pieces did not commit (%s); the recovery will "
                  "finish them, trying again every %d s", journal_id, len(failed), len(cut),
                  "; ".join(sorted({f"{type(e).__name__}: {e}" for e in errors})),
                  LEASE.total_seconds())
        return True
    await _close(table, pk, len(chunks))
    return True


async def _piece(unit: Unit, client: Any, plain: list[Write],
                 groups: frozenset[str] | None) -> None:
    """Commit one piece with its marker; a marker already there means somebody else
    committed the piece (with its marker, atomically): nothing to do."""
    try:
        await unit.transact(client, plain, groups)
    except StoreConflict as exc:
        if exc.detail != DONE_BY_ANOTHER:
            raise


async def recover(table: Table, now: datetime | None = None, limit: int = 10) -> int:
    """Finish up to `limit` journaled units whose writer's lease ended; returns how many."""
    now = now or datetime.now(UTC)
    client = await table.client()
    found, _ = await table.query(keys.JOURNALS, index="gsi1", sk_to=keys.due(us(now) + 1),
                                 limit=limit)
    finished = 0
    for seen in found:
        head = await _take(client, table.name, seen, now)
        if head is None:
            continue  # another recovery took it, or its writer finished meanwhile
        try:
            await _finish(table, client, head)
        except Exception:
            log.exception("journal %s: finishing its unit failed; it is tried again when "
                          "its lease ends", head.get("journal_id"))
            continue
        finished += 1
    return finished


async def _take(client: Any, table: str, seen: Item, now: datetime) -> dict[str, Any] | None:
    until = now + LEASE
    journal_id = seen.get("journal_id", {}).get("S", "")
    try:
        answer = await client.update_item(
            TableName=table, Key={"pk": seen["pk"], "sk": seen["sk"]},
            UpdateExpression="SET lease_until = :until, gsi1sk = :next",
            ConditionExpression="gsi1sk = :seen",
            ExpressionAttributeValues={
                ":until": {"N": str(us(until))}, ":seen": seen["gsi1sk"],
                ":next": {"S": keys.due(us(until), journal_id)}},
            ReturnValues="ALL_NEW")
    except client.exceptions.ConditionalCheckFailedException:
        return None
    return decode(answer["Attributes"])


async def _finish(table: Table, client: Any, head: dict[str, Any]) -> None:
    from .unit import Unit, Write  # unit.py imports this module when it commits

    pk, total, count = head["pk"], int(head["pieces"]), int(head["chunks"])
    expires = int(head["ttl"])
    chunks = {i["sk"]["S"]: bytes(i["plan"]["B"]) for i in await table.get_many(
        [(pk, _chunk_sk(n)) for n in range(count)])}
    if len(chunks) < count:
        raise RuntimeError(f"journal {pk}: {count - len(chunks)} of its chunks are missing")
    plan = orjson.loads(zlib.decompress(b"".join(chunks[_chunk_sk(n)] for n in range(count))))
    done = {i["sk"]["S"] async for i in table.query_all(pk, sk_prefix="P#")}
    left = [n for n in range(total) if _done_sk(n) not in done]
    if left:
        log.warning("journal %s: finishing %d of the %d pieces of a unit its writer left",
                    head.get("journal_id"), len(left), total)
    for n in left:
        piece = plan[n]
        unit = Unit(table, writable=True)
        for snapshot in piece["hooks"]:
            Counters.restore(unit, snapshot)
        await unit.run_hooks()
        plain = [Write(kind, _wire(request), conflict)
                 for kind, request, conflict in piece["writes"]]
        await _piece(unit, client, [*plain, _marker(Write, table.name, pk, n, expires)], None)
    await _close(table, pk, count)


def _marker(write: type[Write], table: str, pk: str, n: int, expires: int) -> Write:
    """Piece `n` is done: put on the condition that it was not yet."""
    return write("Put", {
        "TableName": table, "Item": {"pk": {"S": pk}, "sk": {"S": _done_sk(n)},
                                     "ttl": {"N": str(expires)}},
        "ConditionExpression": "attribute_not_exists(pk)"}, DONE_BY_ANOTHER)


async def _close(table: Table, pk: str, chunks: int) -> None:
    """The unit is whole: the head leaves the index (nobody needs to recover it) and the plan
    is deleted; the head and markers stay until their `ttl` (see the module). Best effort: a
    head left in the index is closed again by the next recovery, a chunk left by its `ttl`."""
    try:
        client = await table.client()
        await client.update_item(
            TableName=table.name, Key={"pk": {"S": pk}, "sk": {"S": HEAD}},
            UpdateExpression="SET closed = :yes REMOVE gsi1pk, gsi1sk",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":yes": {"BOOL": True}})
        await table.delete_many([(pk, _chunk_sk(n)) for n in range(chunks)])
    except Exception:
        log.exception("journal %s: closing it failed; the next recovery will", pk)


# DynamoDB requests as JSON and back: a binary value travels as {"B64": <base64>}.

def _b64(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"B64": base64.b64encode(value).decode()}
    raise TypeError(f"{type(value).__name__} is not a DynamoDB value")


def _wire(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "B64" in value:
            return {"B": base64.b64decode(value["B64"])}
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


__all__ = ["DONE_BY_ANOTHER", "commit", "recover"]
