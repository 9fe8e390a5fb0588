"""The outbox function: the table's stream of new deliveries into SQS (moto's, over loopback)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.aws_lambda.conftest import Context, Harness, queue, queued_messages, sample
from tests.fakes.moto_server import MotoServer
from tidings.entrypoints.aws_lambda import outbox
from tidings.entrypoints.aws_lambda.events import BadEvent


def insert(delivery_id: str, due_ms: int, *, status: str = "pending", app_id: str = "acme",
           notification_id: str = "01JK3V8Z5J3M2XQ4B7C9D1E2F3") -> dict[str, Any]:
    """The sample's INSERT record, for another delivery."""
    record = sample("dynamodb_stream")["Records"][0]
    keys, image = record["dynamodb"]["Keys"], record["dynamodb"]["NewImage"]
    pk = f"A#{app_id}#N#{notification_id}"
    keys["pk"]["S"] = image["pk"]["S"] = pk
    keys["sk"]["S"] = image["sk"]["S"] = f"D#{delivery_id}"
    image["app_id"]["S"], image["notification_id"]["S"] = app_id, notification_id
    image["delivery_id"]["S"], image["status"]["S"] = delivery_id, status
    image["due_ms"]["N"] = str(due_ms)
    return record


def _bodies() -> list[dict[str, Any]]:
    return [json.loads(m.body) for m in queued_messages()]


def _delays() -> dict[str, int]:
    """Each queued message's delay in whole seconds, by delivery id, as moto keeps it."""
    out = {}
    for m in queued_messages():
        wait_ms = m.delayed_until - m.sent_timestamp if m.delayed_until else 0
        out[json.loads(m.body)["delivery_id"]] = round(wait_ms / 1000)
    return out


@pytest.fixture
def sqs_harness(make_harness: Any, aws: MotoServer) -> Harness:
    return make_harness(queue_url=queue(aws))


def test_the_sample_batch_queues_its_one_new_delivery(sqs_harness: Harness) -> None:
    event = sample("dynamodb_stream")
    now_ms = int(sqs_harness.clock.now().timestamp() * 1000)
    event["Records"][0]["dynamodb"]["NewImage"]["due_ms"]["N"] = str(now_ms + 120_000)
    summary = outbox.handler(event, Context())
    assert summary == {"records": 3, "queued": 1, "skipped": 2}
    assert _bodies() == [{"app_id": "acme", "notification_id": "01JK3V8Z5J3M2XQ4B7C9D1E2F3",
                          "delivery_id": "01JK3V8Z5K0A1B2C3D4E5F6G7H"}]
    assert _delays() == {"01JK3V8Z5K0A1B2C3D4E5F6G7H": 120}


def test_delays_are_clamped_and_batches_split(sqs_harness: Harness) -> None:
    now_ms = int(sqs_harness.clock.now().timestamp() * 1000)
    waits = {f"D{n:02d}": w for n, w in enumerate(
        [-60_000, 0, 1, 999, 1_000, 1_001, 899_000, 900_000, 3_600_000] * 3)}
    records = [insert(d, now_ms + w) for d, w in waits.items()]
    records.append(insert("DONE", now_ms, status="sent"))
    summary = outbox.handler({"Records": records}, Context())
    assert summary == {"records": len(waits) + 1, "queued": len(waits), "skipped": 1}
    expected = {d: min(900, max(0, -(-w // 1000))) for d, w in waits.items()}
    assert _delays() == expected
    assert {b["delivery_id"] for b in _bodies()} == set(waits)


def test_other_items_and_changes_are_skipped(sqs_harness: Harness) -> None:
    record = insert("X", 0)
    not_delivery = json.loads(json.dumps(record))
    not_delivery["dynamodb"]["Keys"]["sk"]["S"] = not_delivery["dynamodb"]["NewImage"]["sk"]["S"] = "N"
    modify = dict(json.loads(json.dumps(record)), eventName="MODIFY")
    no_ids = json.loads(json.dumps(record))
    del no_ids["dynamodb"]["NewImage"]["delivery_id"]
    summary = outbox.handler({"Records": [not_delivery, modify, no_ids]}, Context())
    assert summary == {"records": 3, "queued": 0, "skipped": 3}
    assert queued_messages() == []


class FlakySqs:
    """A client whose SendMessageBatch refuses the entries it is told to, `times` times."""

    def __init__(self, refuse: set[str], times: int) -> None:
        self.refuse, self.times = refuse, times
        self.calls: list[list[dict[str, Any]]] = []

    async def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        assert len(Entries) <= 10
        self.calls.append(Entries)
        failed = []
        if self.times > 0:
            self.times -= 1
            failed = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "oops"}
                      for e in Entries if json.loads(e["MessageBody"])["delivery_id"] in self.refuse]
        ok = [{"Id": e["Id"], "MessageId": "m", "MD5OfMessageBody": "x"}
              for e in Entries if e["Id"] not in {f["Id"] for f in failed}]
        return {"Successful": ok, "Failed": failed}


def _with_sqs(make_harness: Any, client: Any) -> Harness:
    return make_harness(sqs=client,
                        queue_url="https://sqs.eu-west-1.amazonaws.com/123456789012/tidings-deliveries")


def test_refused_entries_are_sent_again_once(make_harness: Any) -> None:
    client = FlakySqs({"D1", "D3"}, times=1)
    _with_sqs(make_harness, client)
    summary = outbox.handler({"Records": [insert(f"D{n}", 0) for n in range(5)]}, Context())
    assert summary["queued"] == 5
    first, second = client.calls
    assert len(first) == 5
    assert [json.loads(e["MessageBody"])["delivery_id"] for e in second] == ["D1", "D3"]


def test_entries_refused_twice_fail_the_invocation(make_harness: Any) -> None:
    client = FlakySqs({"D2"}, times=2)
    _with_sqs(make_harness, client)
    with pytest.raises(outbox.NotQueued, match="refused 1 messages twice"):
        outbox.handler({"Records": [insert(f"D{n}", 0) for n in range(3)]}, Context())
    assert len(client.calls) == 2


@pytest.mark.parametrize("damage", ["no records", "records not a list", "record not an object",
                                    "not from dynamodb", "unknown event name", "no keys",
                                    "image not dynamodb json"])
def test_a_wrong_event_raises_before_anything_is_queued(sqs_harness: Harness, damage: str) -> None:
    good = insert("D1", 0)
    event: dict[str, Any] = {"Records": [good, insert("D2", 0)]}
    bad = event["Records"][1]
    if damage == "no records":
        event = {"records": event["Records"]}
    elif damage == "records not a list":
        event["Records"] = {"0": good}
    elif damage == "record not an object":
        event["Records"][1] = "INSERT"
    elif damage == "not from dynamodb":
        bad["eventSource"] = "aws:kinesis"
    elif damage == "unknown event name":
        bad["eventName"] = "UPSERT"
    elif damage == "no keys":
        del bad["dynamodb"]["Keys"]
    else:
        bad["dynamodb"]["NewImage"]["status"] = "pending"
    with pytest.raises(BadEvent):
        outbox.handler(event, Context())
    assert queued_messages() == []  # the good record was not queued either
