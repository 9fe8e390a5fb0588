"""The DynamoDB store reading items it cannot decode (written by hand, or by a version that
wrote them otherwise): a listing leaves the one item out instead of failing the page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.contract.test_store import app, seed_app
from tidings.adapters.store.dynamodb import keys
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
