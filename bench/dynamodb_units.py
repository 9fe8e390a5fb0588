"""What a large send costs the DynamoDB store: transactions, items, bytes, and the time to
commit them with each TransactWriteItems given a simulated round trip.

    .venv/bin/python bench/dynamodb_units.py [--users 20,100,1000] [--rtt-ms 20] [--rounds 3]

A send to N users (in-app and e-mail, with an Idempotency-Key) is written through the store's
port on a moto DynamoDB on loopback (the tests' double, with its fixes of moto), as the service
writes it: the notifications, the idempotency record and one stream event per user. For each N:

- transactions, actions and bytes (DynamoDB's count of names and values) the send writes, and
  the share the journal takes (its opening transaction, the piece markers);
- the median time to commit it with the pieces committed one at a time (the baseline) and 8
  at a time (what the store does), and their ratio. For these timings each TransactWriteItems
  is answered by a simulated DynamoDB that takes --rtt-ms and writes nothing (on AWS a
  transaction of 100 small items takes about 10-30 ms, and transactions on different items
  run side by side); the reads and everything the store computes (packing, counters, the
  journal's compression) are real. moto answers one request at a time and spends far longer
  per item than AWS, so timing through it would measure moto.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import console
from rich.table import Table as RichTable

from tidings.adapters.store.dynamodb import journal, unit
from tidings.adapters.store.dynamodb.pieces import size_of
from tidings.adapters.store.dynamodb.store import DynamoStore
from tidings.domain.apps import App
from tidings.domain.idempotency import IdempotencyRecord
from tidings.domain.notifications import Message
from tidings.domain.planning import Recipient, plan_notification
from tidings.ports import StreamEntry

ROOT = Path(__file__).resolve().parent.parent

NOW = datetime.now(UTC)
APP = App(id="acme", name="acme", created_at=NOW, updated_at=NOW)


async def one_send(store: DynamoStore, users: int, rtt: float,
                   simulate: bool) -> dict[str, Any]:
    client = await store.table.client()
    real = client.transact_write_items
    seen: list[list[dict[str, Any]]] = []

    async def delayed(**kwargs: Any) -> Any:
        seen.append(kwargs["TransactItems"])
        if simulate:
            await asyncio.sleep(rtt)
            return {}
        return await real(**kwargs)

    client.transact_write_items = delayed
    made = [plan_notification(APP, Recipient(user_id=f"u{i:05d}", email=f"u{i}@example.com"),
                              Message(("in_app", "email"), title="Weekly digest",
                                      body="Three new posts in the groups you follow."), NOW)
            for i in range(users)]
    key = uuid.uuid4().hex
    began = time.perf_counter()
    try:
        async with store.transaction() as tx:
            await tx.notifications.add_many(made)
            await tx.idempotency.put(IdempotencyRecord("acme", key, "f", 201, b"{}", NOW,
                                                       NOW + timedelta(days=1)))
            await tx.stream.append("acme", [StreamEntry(n.user_id or "", "notification.created",
                                                        {"id": n.id}) for n in made], NOW)
    finally:
        del client.transact_write_items
    seconds = time.perf_counter() - began
    actions = [a for t in seen for a in t]
    journal_actions = [a for a in actions if _pk(a).startswith("JOURNAL#")]
    return {"seconds": seconds, "transactions": len(seen), "actions": len(actions),
            "bytes": sum(size_of(a) for a in actions),
            "journal_bytes": sum(size_of(a) for a in journal_actions)}


def _pk(action: dict[str, Any]) -> str:
    (request,) = action.values()
    return str((request.get("Item") or request["Key"])["pk"]["S"])


async def run(users: list[int], rtt: float, rounds: int) -> None:
    sys.path.insert(0, str(ROOT))  # the tests' moto double, with its fixes of moto
    from tests.fakes.moto_server import SerialDynamoDB

    # The simulated transactions write nothing: the journal's clean-up finds no head.
    logging.getLogger("tidings.store.dynamodb").setLevel(logging.CRITICAL)

    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                        ("AWS_DEFAULT_REGION", "eu-west-1")):
        os.environ.setdefault(name, value)
    server = SerialDynamoDB()
    server.start()
    table = RichTable(title=f"A send through the DynamoDB store (transactions answered in "
                            f"{rtt * 1000:.0f} ms; median of {rounds})")
    for column in ("users", "transactions", "actions", "KB written", "journal share",
                   "1 at a time, ms", "8 at a time, ms", "ratio"):
        table.add_column(column, justify="right")
    try:
        store = DynamoStore(f"dynamodb://bench-{uuid.uuid4().hex[:8]}?region=eu-west-1"
                            f"&endpoint_url={server.url}", stream=False)
        await store.migrate()
        async with store.transaction() as tx:
            await tx.apps.add(APP)
        for n in users:
            times: dict[int, list[float]] = {1: [], 8: []}
            shape = await one_send(store, n, rtt, simulate=False)  # written for real, on moto
            for _ in range(rounds):
                for at_once in (1, 8):  # interleaved: a busy moment hits both alike
                    unit.PIECES_AT_ONCE = journal.PIECES_AT_ONCE = at_once
                    times[at_once].append((await one_send(store, n, rtt, simulate=True))["seconds"])
            one, eight = statistics.median(times[1]), statistics.median(times[8])
            table.add_row(str(n), str(shape["transactions"]), str(shape["actions"]),
                          f"{shape['bytes'] / 1024:,.0f}",
                          f"{shape['journal_bytes'] / max(1, shape['bytes']):.0%}",
                          f"{one * 1000:,.0f}", f"{eight * 1000:,.0f}", f"{one / eight:.2f}x")
            console.print(f"{n} users done")
        await store.close()
    finally:
        server.stop()
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="20,100,1000")
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run([int(u) for u in args.users.split(",")], args.rtt_ms / 1000, args.rounds))


if __name__ == "__main__":
    main()
