"""DynamoDB units of work larger than one transaction (a send to many users, read-all of a
long inbox): each recipient is written whole or not at all, the counts agree with the inbox,
and a send cut off midway is finished from its journal."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.contract.test_store import app, seed_app
from tidings.adapters.store.dynamodb import journal, keys
from tidings.adapters.store.dynamodb.unit import ReadOnly
from tidings.domain.errors import StoreConflict
from tidings.domain.idempotency import IdempotencyRecord
from tidings.domain.notifications import Message
from tidings.domain.planning import Recipient, plan_notification
from tidings.ports import InboxQuery, StreamEntry

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
USERS = [f"user-{i:02d}" for i in range(40)]


@pytest.fixture
def backend() -> str:
    return "dynamodb"


class Cut(Exception):
    pass


async def transactions(store, monkeypatch, fail_at: int | None = None,
                       before=None) -> list[list[dict]]:
    """Record each TransactWriteItems; the `fail_at`th (from 1) raises, as a writer that died
    there; `before(n)` runs before the nth."""
    client = await store.table.client()
    real = client.transact_write_items
    seen: list[list[dict]] = []
    calls = 0

    async def recorded(**kwargs):
        nonlocal calls
        calls += 1
        if before is not None:
            await before(calls)
        if fail_at is not None and calls == fail_at:
            raise Cut
        answer = await real(**kwargs)
        seen.append(kwargs["TransactItems"])
        return answer

    monkeypatch.setattr(client, "transact_write_items", recorded)
    return seen


def record() -> IdempotencyRecord:
    return IdempotencyRecord("acme", "send-1", "f", 201, b"{}", NOW, NOW + timedelta(days=1))


async def send(store, records: tuple[IdempotencyRecord, ...] | None = None) -> list:
    """The send's stream events (numbered at commit), one per user of USERS."""
    made = [plan_notification(app(), Recipient(user_id=u), Message(("in_app",), title="hi"), NOW)
            for u in USERS]
    async with store.transaction() as tx:
        await tx.notifications.add_many(made)
        for r in records or (record(),):
            await tx.idempotency.put(r)
        events = await tx.stream.append("acme", [StreamEntry(n.user_id, "notification.created",
                                                             {"id": n.id}) for n in made], NOW)
    return events


async def state(store, user_id: str) -> tuple[int, int, int]:
    """(inbox items, unread count, stream events) of the user."""
    async with store.reader() as tx:
        inbox = await tx.notifications.inbox("acme", user_id, InboxQuery(), 50)
        unread = await tx.notifications.unread_count("acme", user_id, None)
        events = await tx.stream.since("acme", user_id, 0, None, 50)
    return len(inbox), unread, len(events)


async def journals(store) -> list[dict]:
    """The journal items still open: a head in the recovery index, or a chunk of a plan (a
    closed journal keeps its head and piece markers until their ttl)."""
    client = await store.table.client()
    answer = await client.scan(TableName=store.table.name, FilterExpression="begins_with(pk, :j)",
                               ExpressionAttributeValues={":j": {"S": "JOURNAL#"}})
    return [i for i in answer["Items"]
            if "gsi1pk" in i or i["sk"]["S"].startswith("C#")
            or ("closed" not in i and i["sk"]["S"] == "H")]


async def test_a_large_send_opens_a_journal_then_commits_each_recipient_whole(
        store, monkeypatch):
    await seed_app(store)
    seen = await transactions(store, monkeypatch)
    events = await send(store)
    assert len(seen) > 2 and all(len(t) <= 100 for t in seen)
    # The first transaction: the journal and the idempotency record, no recipient.
    assert {_pk(a).split("#")[0] for a in seen[0]} == {"JOURNAL", "IDEM"}
    for e in events:
        mine = {keys.user("acme", e.user_id), keys.notification("acme", str(e.data["id"])),
                keys.stream("acme", e.user_id)}
        holding = [i for i, t in enumerate(seen) if any(_pk(a) in mine for a in t)]
        assert len(holding) == 1 and holding[0] > 0, e.user_id
    assert sorted(e.seq for e in events) == [1] * len(USERS)
    for u in USERS:
        assert await state(store, u) == (1, 1, 1)
    assert await journals(store) == []
    # The table's stream hands the outbox every new item under `D#` as a delivery (the SAM
    # template's filter): the journal's items must stay out of it.
    written = [_pk(x) for t in seen for x in t if _sk(x).startswith(keys.delivery_sk(""))]
    assert written and all(pk.startswith(keys.notification("acme", "")) for pk in written)


@pytest.mark.parametrize("fail_at", [2, 3])
async def test_a_send_whose_piece_fails_is_finished_by_recovery_once_its_lease_ends(
        store, monkeypatch, caplog, fail_at):
    """A piece that fails after the journal committed is not reported to the caller, who
    would write the send again (the group commit splits a batch on a conflict): the send is
    durable, and the recovery finishes it."""
    await seed_app(store)
    await transactions(store, monkeypatch, fail_at=fail_at)
    events = await send(store)
    assert "the recovery will finish them" in caplog.text
    monkeypatch.undo()
    states = [await state(store, u) for u in USERS]
    assert set(states) <= {(1, 1, 1), (0, 0, 0)} and states.count((0, 0, 0)) > 0
    # Only the events that committed keep their number (the service publishes those alone):
    # a user's number 1 may be taken by another send before the recovery comes.
    assert [e.seq for e in events] == [st[2] for st in states]
    async with store.reader() as tx:  # a retry of the request is answered as done
        assert await tx.idempotency.get("acme", "send-1") is not None
    # While its writer's lease holds, nobody else touches the unit.
    assert await journal.recover(store.table) == 0
    assert [await state(store, u) for u in USERS] == states
    assert await journal.recover(store.table, datetime.now(UTC) + journal.LEASE * 2) == 1
    assert {await state(store, u) for u in USERS} == {(1, 1, 1)}
    assert await journals(store) == []
    assert await journal.recover(store.table, datetime.now(UTC) + journal.LEASE * 2) == 0


async def test_a_send_cut_off_before_its_journal_commits_writes_nothing(store, monkeypatch):
    await seed_app(store)
    await transactions(store, monkeypatch, fail_at=1)
    with pytest.raises(Cut):
        await send(store)
    assert {await state(store, u) for u in USERS} == {(0, 0, 0)}
    assert await journals(store) == []
    async with store.reader() as tx:
        assert await tx.idempotency.get("acme", "send-1") is None


async def test_a_send_whose_key_a_twin_took_fails_whole_at_its_first_transaction(
        store, monkeypatch):
    await seed_app(store)

    async def twin(n: int) -> None:
        if n == 1:
            async with store.transaction() as tx:
                await tx.idempotency.put(record())

    seen = await transactions(store, monkeypatch, before=twin)
    with pytest.raises(StoreConflict):
        await send(store)
    assert len(seen) == 1  # the twin's
    assert {await state(store, u) for u in USERS} == {(0, 0, 0)}
    assert await journals(store) == []


async def test_a_recovery_that_meets_the_writer_still_at_it_commits_each_piece_once(
        store, monkeypatch):
    """The writer outlived its lease (it was paused): a recovery took the journal over. Each
    piece is committed by one of them only (its marker decides); the writer skips the pieces
    the recovery did, and a piece it committed late after the recovery closed the journal
    meets its marker still there."""
    await seed_app(store)
    taken = []

    async def recovery(n: int) -> None:
        if n == 3 and not taken:  # the writer committed the journal and its first piece
            taken.append(await journal.recover(store.table,
                                               datetime.now(UTC) + journal.LEASE * 2))

    seen = await transactions(store, monkeypatch, before=recovery)
    await send(store)
    assert taken == [1]
    assert {await state(store, u) for u in USERS} == {(1, 1, 1)}
    assert await journals(store) == []
    # A piece done again after everything closed (its plain writes and its marker, as a
    # late writer would) is refused on the marker, which outlives the journal's closing.
    piece = [a for a in seen[1] if "ConditionExpression" not in next(iter(a.values()))
             or _pk(a).startswith("JOURNAL#")]
    marker = [i for i, a in enumerate(piece) if _pk(a).startswith("JOURNAL#")]
    assert len(marker) == 1 and len(piece) > 1
    client = await store.table.client()
    with pytest.raises(client.exceptions.TransactionCanceledException) as refused:
        await client.transact_write_items(TransactItems=piece)
    codes = [r.get("Code") for r in refused.value.response["CancellationReasons"]]
    assert codes[marker[0]] == "ConditionalCheckFailed"
    assert {await state(store, u) for u in USERS} == {(1, 1, 1)}


async def test_read_all_of_a_long_inbox_keeps_the_counts_with_the_items_when_cut_off(
        store, monkeypatch):
    await seed_app(store)
    made = [plan_notification(app(), Recipient(user_id="u1"), Message(("in_app",), title=str(i)),
                              NOW + timedelta(milliseconds=i)) for i in range(230)]
    for start in range(0, len(made), 20):
        async with store.transaction() as tx:
            await tx.notifications.add_many(made[start:start + 20])
    await transactions(store, monkeypatch, fail_at=2)
    with pytest.raises(Cut):
        async with store.transaction() as tx:
            await tx.notifications.mark_all_read("acme", "u1", None, None, NOW)
    async with store.reader() as tx:
        unread = await tx.notifications.inbox("acme", "u1", InboxQuery(unread_only=True), 200)
        count = await tx.notifications.unread_count("acme", "u1", None)
    assert count == len(unread) == 230 - 90
    monkeypatch.undo()
    async with store.transaction() as tx:
        assert await tx.notifications.mark_all_read("acme", "u1", None, None, NOW) == 140
    async with store.reader() as tx:
        assert await tx.notifications.unread_count("acme", "u1", None) == 0


def _sk(action: dict) -> str:
    (request,) = action.values()
    return (request.get("Item") or request["Key"])["sk"]["S"]


def _pk(action: dict) -> str:
    (request,) = action.values()
    return (request.get("Item") or request["Key"])["pk"]["S"]


async def test_the_workers_housekeeping_finishes_a_left_unit(store, container, monkeypatch):
    """`tidings worker` and the AWS scheduler run the dispatcher's housekeeping: with the
    DynamoDB store it finishes journals whose lease ended (here at once)."""
    monkeypatch.setattr(journal, "LEASE", timedelta(0))
    await seed_app(store)
    await transactions(store, monkeypatch, fail_at=2)
    await send(store)
    monkeypatch.undo()  # the table works again
    monkeypatch.setattr(journal, "LEASE", timedelta(0))
    await container.dispatcher.housekeeping()
    assert {await state(store, u) for u in USERS} == {(1, 1, 1)}


async def test_several_requests_too_large_to_journal_together_are_refused_whole(
        store, monkeypatch):
    """A group commit of several sends whose plan is over what the journal's opening
    transaction holds is refused before anything is written (StoreConflict: the group commit
    then writes each request alone, each journaled)."""
    await seed_app(store)
    monkeypatch.setattr(journal, "MAX_BYTES", 5_000)
    twins = (record(), IdempotencyRecord("acme", "send-2", "f", 201, b"{}", NOW,
                                         NOW + timedelta(days=1)))
    with pytest.raises(StoreConflict, match="too much for one unit"):
        await send(store, twins)
    assert {await state(store, u) for u in USERS} == {(0, 0, 0)}
    async with store.reader() as tx:
        assert await tx.idempotency.get("acme", "send-1") is None
    monkeypatch.undo()
    await send(store, twins[:1])
    assert {await state(store, u) for u in USERS} == {(1, 1, 1)}


async def test_read_all_refuses_a_read_only_unit(store):
    await seed_app(store)
    async with store.reader() as tx:
        with pytest.raises(ReadOnly):
            await tx.notifications.mark_all_read("acme", "u1", None, None, NOW)


async def test_the_scheduler_reads_past_leased_notifications_at_the_head_of_a_shard(
        store, monkeypatch):
    """DynamoDB applies a query's Limit before its filter: 30 leased notifications at the
    head of a shard must not hide the due ones behind them."""
    monkeypatch.setattr(keys, "SHARDS", 1)
    await seed_app(store)
    made = [plan_notification(app(), Recipient(user_id=f"s{i}"), Message(("in_app",), title=str(i)),
                              NOW, send_at=NOW + timedelta(milliseconds=i + 1)) for i in range(40)]
    async with store.transaction() as tx:
        await tx.notifications.add_many(made)
    later = NOW + timedelta(seconds=5)
    async with store.transaction() as tx:
        leased = await tx.notifications.due(later, 30)  # taken, not fired: leased for 30 s
    async with store.transaction() as tx:
        rest = await tx.notifications.due(later, 10)
    assert len(leased) == 30
    assert sorted(n.title or "" for n in rest) == sorted(str(i) for i in range(30, 40))


async def test_concurrent_keyed_sends_through_http_each_land_once(client, acme):
    """Sixty sends at once, each to the same 3 users with an Idempotency-Key, through the
    API: the service commits concurrent sends together (its group commit, at most 32 on
    DynamoDB), each request's idempotency record in the journal's opening transaction. Every
    send lands once, the counts are exact, and a retry is answered from its record."""
    users = [f"h{i:02d}" for i in range(3)]
    # Each user gets dozens of notifications in one unit: more writes than one transaction.
    sends = 60

    async def one(n: int) -> Any:
        return await client.post(
            "/v1/notifications", json={"to": {"user_ids": users}, "title": f"n{n}"},
            headers={**acme["headers"], "Idempotency-Key": f"bulk-{n}"})

    answers = await asyncio.gather(*(one(n) for n in range(sends)))
    assert {r.status_code for r in answers} == {202}, [r.text for r in answers if r.status_code != 202][:1]
    again = await asyncio.gather(*(one(n) for n in range(0, sends, 17)))
    assert {r.headers.get("idempotent-replayed") for r in again} == {"true"}
    for user in users:
        r = await client.get(f"/v1/users/{user}/notifications?limit=200", headers=acme["headers"])
        assert r.status_code == 200, r.text
        assert sorted(n["title"] for n in r.json()["items"]) == sorted(f"n{n}" for n in range(sends))
        assert r.json()["unread_count"] == sends
