"""A unit of work too large for one DynamoDB transaction (a send to many users) made
all-or-nothing in the end: its plan is written first, and whoever finds it unfinished finishes it.

1. The first transaction writes the *journal*: a head item (`keys.journal(id)`, sk `H`: how
   many pieces, how many done, a lease) and the plan, compressed, in chunks of at most 350 KB
   (sk `C#0000`, ...): for each piece (pieces.py) its plain writes as DynamoDB requests and
   what it does to counters (counters.py `snapshot`: the changes, not the values). With it go
   the writes that say the unit is done (`last`: its idempotency records), conditions and all.
   If that transaction fails, nothing is written; once it commits, the unit will be whole.
2. Each piece then commits in its own transaction with `done = done + 1` on the head, on the
   condition that `done` is what this writer expects: a piece commits exactly once, even if
   two writers were at it.
3. The head and chunks are deleted at the end (and carry a `ttl` as a backstop).

A writer that dies (a Lambda cut off at its timeout, a process killed) or meets an error it
cannot wait out leaves the journal in the sparse gsi1 partition `keys.JOURNALS`, due when its
lease ends (LEASE after it was written). `recover` takes such a journal under a new lease and
commits the pieces not done, each from its plan, the counters read afresh. The housekeeping of
the worker and the AWS scheduler call it.

Only units whose every conditional write is a `last` one are journaled: their pieces cannot
fail on a condition, so finishing them later is always right. Others (a broadcast batch, whose
reservations are conditional, finds what it reached when done again) commit in plain pieces.
The journal costs its own writes, about a third more bytes written by a large send."""

from __future__ import annotations

import base64
import logging
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from . import keys
from .codec import Item, decode, encode, us
from .counters import Counters
from .pieces import MAX_BYTES, MAX_ITEMS, pieces

if TYPE_CHECKING:
    from .table import Table
    from .unit import Unit, Write

log = logging.getLogger("tidings.store.dynamodb")

HEAD = "H"
CHUNK_BYTES = 350_000
# A journal's writer has this long before anyone else may finish its unit.
LEASE = timedelta(minutes=2)
# DynamoDB deletes a journal item this long after it was written, should nothing else do it.
KEEP = timedelta(days=7)
TAKEN_OVER = "the unit's journal was taken over by a recovery meanwhile"


def _chunk_sk(n: int) -> str:
    return f"C#{n:04d}"


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
        plan.append({"writes": [[w.kind, _plain(w.request), w.conflict]
                                for w in piece if not w.optimistic],
                     "groups": sorted(groups), "hooks": hooks})
    blob = zlib.compress(orjson.dumps(plan), 6)
    chunks = [blob[at:at + CHUNK_BYTES] for at in range(0, len(blob), CHUNK_BYTES)]
    if 1 + len(chunks) + len(first) > MAX_ITEMS or \
            len(blob) + sum(w.size for w in first) + 1000 > MAX_BYTES:
        log.warning("a unit of %d writes is too large to journal (%d bytes compressed); "
                    "committing it in pieces without one", len(writes), len(blob))
        return False
    from .unit import Write  # unit.py imports this module when it commits

    table = unit.table
    journal_id = uuid.uuid4().hex
    pk = keys.journal(journal_id)
    now = datetime.now(UTC)
    until = now + LEASE
    expires = int((now + KEEP).timestamp())
    head = encode({"pk": pk, "sk": HEAD, "journal_id": journal_id, "pieces": len(cut),
                   "chunks": len(chunks), "done": 0, "created_at": us(now),
                   "lease_until": us(until), "ttl": expires, "gsi1pk": keys.JOURNALS,
                   "gsi1sk": keys.due(us(until), journal_id)})
    items = [head] + [encode({"pk": pk, "sk": _chunk_sk(n), "ttl": expires, "plan": chunk})
                      for n, chunk in enumerate(chunks)]
    opening = [Write("Put", {"TableName": table.name, "Item": item}) for item in items]
    # The idempotency records commit with the journal: from here on the unit will be whole,
    # and a retry of the request is answered as done.
    await unit.transact(client, opening + first, frozenset())
    for done, piece in enumerate(cut):
        groups = frozenset(w.group for w in piece if w.optimistic and w.group is not None)
        await unit.transact(client, [w for w in piece if not w.optimistic]
                            + [_progress(Write, table.name, pk, done)], groups)
    await _forget(client, table.name, pk, len(chunks))
    return True


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

    pk, done, total = head["pk"], int(head["done"]), int(head["pieces"])
    count = int(head["chunks"])
    chunks = {i["sk"]["S"]: bytes(i["plan"]["B"]) for i in await table.get_many(
        [(pk, _chunk_sk(n)) for n in range(count)])}
    if len(chunks) < count:
        raise RuntimeError(f"journal {pk}: {count - len(chunks)} of its chunks are missing")
    plan = orjson.loads(zlib.decompress(b"".join(chunks[_chunk_sk(n)] for n in range(count))))
    if done < total:
        log.warning("journal %s: finishing pieces %d to %d of a unit its writer left",
                    head.get("journal_id"), done + 1, total)
    for at in range(done, total):
        piece = plan[at]
        unit = Unit(table, writable=True)
        for snapshot in piece["hooks"]:
            Counters.restore(unit, snapshot)
        await unit.run_hooks()
        plain = [Write(kind, _wire(request), conflict)
                 for kind, request, conflict in piece["writes"]]
        await unit.transact(client, [*plain, _progress(Write, table.name, pk, at)], None)
    await _forget(client, table.name, pk, count)


def _progress(write: type[Write], table: str, pk: str, done: int) -> Write:
    """The head's `done` moved on from `done`, on the condition that it is still that."""
    return write("Update", {
        "TableName": table, "Key": {"pk": {"S": pk}, "sk": {"S": HEAD}},
        "UpdateExpression": "SET done = :next", "ConditionExpression": "done = :done",
        "ExpressionAttributeValues": {":done": {"N": str(done)}, ":next": {"N": str(done + 1)}}},
        TAKEN_OVER)


async def _forget(client: Any, table: str, pk: str, chunks: int) -> None:
    """Delete the journal (best effort: its `ttl` deletes what this leaves)."""
    requests = [{"DeleteRequest": {"Key": {"pk": {"S": pk}, "sk": {"S": sk}}}}
                for sk in [HEAD] + [_chunk_sk(n) for n in range(chunks)]]
    try:
        for at in range(0, len(requests), 25):
            pending = requests[at:at + 25]
            for _ in range(5):
                answer = await client.batch_write_item(RequestItems={table: pending})
                pending = answer.get("UnprocessedItems", {}).get(table, [])
                if not pending:
                    break
    except Exception:
        log.exception("journal %s: deleting it failed; its ttl will", pk)


# DynamoDB requests as JSON and back: binary values ({"B": bytes}) travel as base64.

def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("B"), bytes | bytearray):
            return {"B64": base64.b64encode(value["B"]).decode()}
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _wire(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "B64" in value:
            return {"B": base64.b64decode(value["B64"])}
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


__all__ = ["TAKEN_OVER", "commit", "recover"]
