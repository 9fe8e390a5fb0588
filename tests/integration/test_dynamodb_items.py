"""The DynamoDB store reading items it cannot decode (written by hand, or by a version that
wrote them otherwise): a listing leaves the one item out instead of failing the page."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from tests.contract.test_store import app, seed_app
from tidings.adapters.store.dynamodb import keys
from tidings.domain.errors import ValidationFailed
from tidings.domain.notifications import Message
from tidings.domain.planning import Recipient, plan_notification
from tidings.ports import InboxQuery

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@pytest.fixture
def backend() -> str:
    return "dynamodb"


async def test_an_item_that_does_not_decode_is_left_out_of_the_inbox(store, caplog):
    await seed_app(store)
    made = [plan_notification(app(), Recipient(user_id="u1"), Message(("in_app",), title=str(i)),
                              NOW + timedelta(seconds=i)) for i in range(3)]
    async with store.transaction() as tx:
        await tx.notifications.add_many(made)
    client = await store.table.client()
    broken = keys.inbox_sk(made[1].id)
    await client.update_item(TableName=store.table.name,
                             Key={"pk": {"S": keys.user("acme", "u1")}, "sk": {"S": broken}},
                             UpdateExpression="SET #data = :bad",
                             ExpressionAttributeNames={"#data": "data"},
                             ExpressionAttributeValues={":bad": {"S": "{not json"}})
    async with store.reader() as tx:
        page = await tx.notifications.inbox("acme", "u1", InboxQuery(), 10)
    assert [n.title for n in page] == ["2", "0"]
    assert "does not decode" in caplog.text and broken in caplog.text


async def test_long_html_is_stored_compressed_and_read_back_whole(store):
    await seed_app(store)
    html = "".join(f"<p>Line {i} of the newsletter, with the same words again.</p>"
                   for i in range(9000))  # ~550 KB: more than DynamoDB holds in one item
    (made,) = [plan_notification(app(), Recipient(user_id="u1", email="ada@example.com"),
                                 Message(("email",), title="news", html=html), NOW)]
    async with store.transaction() as tx:
        await tx.notifications.add_many([made])
    client = await store.table.client()
    raw = await client.get_item(TableName=store.table.name, Key={
        "pk": {"S": keys.user("acme", "u1")}, "sk": {"S": keys.inbox_sk(made.id)}})
    assert "B" in raw["Item"]["options"] and len(raw["Item"]["options"]["B"]) < len(html) // 10
    async with store.reader() as tx:
        got = await tx.notifications.get("acme", made.id)
    assert got is not None and got.options == {"html": html}
    async with store.transaction() as tx:
        claims = await tx.deliveries.claim(NOW + timedelta(seconds=1), 10, 30, "lease")
    assert [c.message.html for c in claims if c.message] == [html]


async def test_content_too_large_even_compressed_is_refused_and_nothing_is_written(store):
    await seed_app(store)
    noise = random.Random(6).randbytes(450_000).hex()  # compresses to about half
    made = [plan_notification(app(), Recipient(user_id=u, email="ada@example.com"),
                              Message(("email",), title="x", html=noise), NOW)
            for u in ("u1", "u2")]
    with pytest.raises(ValidationFailed, match="over the 400 KB"):
        async with store.transaction() as tx:
            await tx.notifications.add_many(made)
    async with store.reader() as tx:
        assert await tx.notifications.get("acme", made[0].id) is None


async def test_a_delivery_whose_notification_does_not_decode_leaves_the_batch_to_the_others(
        store, caplog):
    await seed_app(store)
    made = [plan_notification(app(), Recipient(user_id=u, email=f"{u}@example.com"),
                              Message(("email",), title=u), NOW) for u in ("u1", "u2", "u3")]
    async with store.transaction() as tx:
        await tx.notifications.add_many(made)
    client = await store.table.client()
    await client.update_item(TableName=store.table.name, Key={
        "pk": {"S": keys.user("acme", "u2")}, "sk": {"S": keys.inbox_sk(made[1].id)}},
        UpdateExpression="SET #data = :bad", ExpressionAttributeNames={"#data": "data"},
        ExpressionAttributeValues={":bad": {"S": "{not json"}})
    ids = [(n.app_id, n.id, d.id) for n in made for d in n.deliveries]
    async with store.transaction() as tx:
        claims, later = await tx.deliveries.claim_ids(ids, NOW + timedelta(seconds=1), 30, "l")
    assert sorted(c.message.title for c in claims if c.message) == ["u1", "u3"]
    assert not later and "does not decode" in caplog.text


async def test_due_deliveries_spread_over_the_index_shards_and_are_all_claimed(store):
    await seed_app(store)
    made = [plan_notification(app(), Recipient(user_id=f"u{i}", email=f"u{i}@example.com"),
                              Message(("email",), title=str(i)), NOW + timedelta(milliseconds=i))
            for i in range(40)]
    async with store.transaction() as tx:
        await tx.notifications.add_many(made)
    client = await store.table.client()
    found = await client.scan(
        TableName=store.table.name, FilterExpression="begins_with(sk, :d) AND begins_with(pk, :a)",
        ExpressionAttributeValues={":d": {"S": keys.delivery_sk("")}, ":a": {"S": "A#"}})
    parts = {i["gsi1pk"]["S"] for i in found["Items"]}
    assert len(found["Items"]) == 40 and len(parts) > 8
    assert all(keys.in_shards(p, keys.DUE_DELIVERIES) for p in parts)
    # The oldest first across the shards.
    async with store.transaction() as tx:
        first = await tx.deliveries.claim(NOW + timedelta(seconds=1), 10, 30, "lease")
    assert [c.message.title for c in first if c.message] == [str(i) for i in range(10)]
    async with store.transaction() as tx:
        claims = await tx.deliveries.claim(NOW + timedelta(seconds=1), 100, 30, "lease")
    assert len(claims) == 30
    async with store.reader() as tx:
        overdue = await tx.deliveries.overdue(NOW + timedelta(hours=1), 25)
    assert len(overdue) == 25  # leased ones are due again when their lease ends
