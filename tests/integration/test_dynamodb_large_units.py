"""DynamoDB units of work larger than one transaction (a send to many users, read-all of a
long inbox): cut off between two transactions, each recipient is written whole or not at all,
the counts agree with the inbox, and the unit is not recorded as done."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.contract.test_store import app, seed_app
from tidings.adapters.store.dynamodb import keys
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
                       between=None) -> list[list[dict]]:
    """Record each TransactWriteItems; the `fail_at`th (from 1) raises, as a process that
    died there; `between(n)` runs after the nth."""
    client = await store.table.client()
    real = client.transact_write_items
    seen: list[list[dict]] = []

    async def recorded(**kwargs):
        if fail_at is not None and len(seen) + 1 == fail_at:
            raise Cut
        answer = await real(**kwargs)
        seen.append(kwargs["TransactItems"])
        if between is not None:
            await between(len(seen))
        return answer

    monkeypatch.setattr(client, "transact_write_items", recorded)
    return seen


def record() -> IdempotencyRecord:
    return IdempotencyRecord("acme", "send-1", "f", 201, b"{}", NOW, NOW + timedelta(days=1))


async def send(store) -> list:
    made = [plan_notification(app(), Recipient(user_id=u), Message(("in_app",), title="hi"), NOW)
            for u in USERS]
    async with store.transaction() as tx:
        await tx.notifications.add_many(made)
        await tx.idempotency.put(record())
        await tx.stream.append("acme", [StreamEntry(n.user_id, "notification.created",
                                                    {"id": n.id}) for n in made], NOW)
    return made


async def state(store, user_id: str) -> tuple[int, int, int]:
    """(inbox items, unread count, stream events) of the user."""
    async with store.reader() as tx:
        inbox = await tx.notifications.inbox("acme", user_id, InboxQuery(), 50)
        unread = await tx.notifications.unread_count("acme", user_id, None)
        events = await tx.stream.since("acme", user_id, 0, None, 50)
    return len(inbox), unread, len(events)


async def test_a_large_send_commits_each_recipient_whole_in_one_transaction(store, monkeypatch):
    await seed_app(store)
    seen = await transactions(store, monkeypatch)
    made = await send(store)
    assert len(seen) > 1 and all(len(t) <= 100 for t in seen)
    for n in made:
        mine = {keys.user("acme", n.user_id), keys.notification("acme", n.id),
                keys.stream("acme", n.user_id)}
        holding = [i for i, t in enumerate(seen)
                   if any(_pk(action) in mine for action in t)]
        assert len(holding) == 1, n.user_id
    # The idempotency record is in the last one.
    assert any(_pk(a) == keys.idempotency("acme", "send-1") for a in seen[-1])
    for u in USERS:
        assert await state(store, u) == (1, 1, 1)


@pytest.mark.parametrize("fail_at", [2, 3])
async def test_a_send_cut_off_between_transactions_leaves_whole_recipients_and_no_record(
        store, monkeypatch, fail_at):
    await seed_app(store)
    await transactions(store, monkeypatch, fail_at=fail_at)
    with pytest.raises(Cut):
        await send(store)
    states = [await state(store, u) for u in USERS]
    assert set(states) == {(1, 1, 1), (0, 0, 0)}
    assert 0 < states.count((1, 1, 1)) < len(USERS)
    async with store.reader() as tx:
        assert await tx.idempotency.get("acme", "send-1") is None


async def test_a_send_whose_key_a_twin_takes_midway_stops_at_its_next_transaction(
        store, monkeypatch):
    await seed_app(store)

    async def twin(n: int) -> None:
        if n == 1:
            async with store.transaction() as tx:
                await tx.idempotency.put(record())

    seen = await transactions(store, monkeypatch, between=twin)
    with pytest.raises(StoreConflict):
        await send(store)
    # The twin's own transaction and the send's first: the second saw the key taken.
    assert len(seen) == 2
    written = sum([(await state(store, u))[0] for u in USERS])
    assert 0 < written < len(USERS)


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


def _pk(action: dict) -> str:
    (request,) = action.values()
    return (request.get("Item") or request["Key"])["pk"]["S"]
