"""The queue worker: a batch of SQS messages (received from moto's queue, with their real receipt
handles) through the delivery engine, and what becomes of each message."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest

from tests.aws_lambda.conftest import REGION, Context, Harness, queue, queued_messages, sample
from tests.fakes.moto_server import MotoServer
from tidings.domain.delivery import Claim, OutboundMessage, Retry, Sent
from tidings.entrypoints.aws_lambda import worker
from tidings.entrypoints.aws_lambda.events import BadEvent


@pytest.fixture
def h(make_harness: Any, aws: MotoServer) -> Harness:
    return make_harness(queue_url=queue(aws))


def deliveries(h: Harness, key: str, *users: str) -> list[dict[str, str]]:
    """Sends a push to each user (one device each); returns the deliveries' ids."""
    out = []
    for user in users:
        r = h.http("POST", f"/v1/users/{user}/devices", key=key,
                   json_body={"platform": "android", "token": f"token-{user}"})
        assert r.status == 201, r.body
        r = h.http("POST", "/v1/notifications", key=key,
                   json_body={"to": {"user_id": user}, "title": f"for {user}", "channels": ["push"]})
        assert r.status == 202, r.body
        [n] = r.body["items"]
        [d] = n["deliveries"]
        out.append({"app_id": "acme", "notification_id": n["id"], "delivery_id": d["id"]})
    return out


def batch(aws: MotoServer, bodies: list[str]) -> dict[str, Any]:
    """Sends the bodies to the queue, receives them, and makes of them the event Lambda's SQS
    event source would invoke the function with."""
    sqs = aws.client("sqs", region=REGION)
    url = sqs.get_queue_url(QueueName="tidings-deliveries")["QueueUrl"]
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    received: list[dict[str, Any]] = []
    while len(received) < len(bodies):
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                     MessageSystemAttributeNames=["All"])
        received.extend(answer.get("Messages", []))
    by_body = {m["Body"]: m for m in received}
    template = sample("sqs_batch")["Records"][0]
    records = []
    for body in bodies:
        m = by_body[body]
        record = json.loads(json.dumps(template))
        record.update(messageId=m["MessageId"], receiptHandle=m["ReceiptHandle"], body=m["Body"],
                      md5OfBody=m["MD5OfBody"])
        record["attributes"].update({k: v for k, v in m["Attributes"].items()
                                     if k in record["attributes"]})
        records.append(record)
    return {"Records": records}


def visibility(body: str) -> float:
    """Seconds until moto hands the message out again."""
    [m] = [m for m in queued_messages() if m.body == body]
    return (m.visible_at - time.time() * 1000) / 1000


def failed(answer: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in answer["batchItemFailures"]]


def test_sent_retried_and_broken_messages(h: Harness, aws: MotoServer) -> None:
    key = h.app_with_key("acme")
    ok, later = deliveries(h, key, "u1", "u2")
    h.providers.get("log").script = lambda m: (
        Retry("429 from the provider", after=120) if m.user_id == "u2" else Sent(f"m-{m.delivery_id}"))
    bodies = [json.dumps(ok), json.dumps(later), '{"app_id": "acme"}']
    event = batch(aws, bodies)
    ids = [r["messageId"] for r in event["Records"]]

    answer = worker.handler(event, Context())

    assert failed(answer) == [ids[1], ids[2]]
    assert sorted(m.user_id or "" for m in h.providers.get("log").sent) == ["u1", "u2"]
    assert 110 < visibility(bodies[1]) <= 121  # back when the provider said to retry
    assert visibility(bodies[2]) <= 31  # the queue's own timeout: it heads for the DLQ
    r = h.http("GET", f"/v1/notifications/{later['notification_id']}", key=key)
    [d] = r.body["deliveries"]
    assert (d["status"], d["attempts"]) == ("pending", 1)
    r = h.http("GET", f"/v1/notifications/{ok['notification_id']}", key=key)
    assert r.body["deliveries"][0]["status"] == "sent"


def test_a_message_back_before_its_delivery_is_due_is_held_again(h: Harness, aws: MotoServer) -> None:
    [later] = deliveries(h, h.app_with_key("acme"), "u2")
    h.providers.get("log").script = lambda m: Retry("503", after=600)
    first = batch(aws, [json.dumps(later)])
    assert len(failed(worker.handler(first, Context()))) == 1
    assert len(h.providers.get("log").sent) == 1

    h.clock.advance(200)  # the message came back early (say, the hold was refused)
    again = json.dumps(later) + " "  # a second message for the same delivery
    answer = worker.handler(batch(aws, [again]), Context())
    assert len(failed(answer)) == 1
    assert len(h.providers.get("log").sent) == 1  # not sent again before its time
    assert 390 < visibility(again) <= 401

    h.clock.advance(401)
    h.providers.get("log").script = lambda m: Sent("at last")
    third = json.dumps(later) + "  "
    assert failed(worker.handler(batch(aws, [third]), Context())) == []
    assert len(h.providers.get("log").sent) == 2


def test_unknown_and_repeated_deliveries_are_dropped(h: Harness, aws: MotoServer) -> None:
    [d] = deliveries(h, h.app_with_key("acme"), "u1")
    gone = dict(d, delivery_id="01JK3V8Z5K0A1B2C3D4E5F6G7H")
    bodies = [json.dumps(d), json.dumps(d) + " ", json.dumps(gone)]
    answer = worker.handler(batch(aws, bodies), Context())
    assert failed(answer) == []
    assert len(h.providers.get("log").sent) == 1
    assert h.claims.asked == [[tuple(d.values()), tuple(gone.values())]]

    # Sent already: a late copy of its message finds nothing to do.
    assert failed(worker.handler(batch(aws, [json.dumps(d) + "\n"]), Context())) == []
    assert len(h.providers.get("log").sent) == 1


def test_the_hold_never_passes_sqs_limit(make_harness: Any, aws: MotoServer) -> None:
    """A delivery held for a day (quiet hours end tomorrow) is held the 12 hours SQS allows, then
    again."""
    async def far(ids: Any, now: Any, lease: float, lease_id: str) -> tuple[list[Claim], dict[str, Any]]:
        return [], {ids[0][2]: now + timedelta(days=1)}

    h = make_harness(queue_url=queue(aws), claims=far)
    [d] = deliveries(h, h.app_with_key("acme"), "u1")
    body = json.dumps(d)
    assert len(failed(worker.handler(batch(aws, [body]), Context()))) == 1
    assert 43100 < visibility(body) <= 43200
    assert h.providers.get("log").sent == []


class Unreachable:
    async def __call__(self, *args: Any) -> Any:
        raise ConnectionError("the table cannot be reached")


def test_a_store_failure_fails_the_whole_batch(make_harness: Any, aws: MotoServer) -> None:
    h = make_harness(queue_url=queue(aws), claims=Unreachable())
    [d] = deliveries(h, h.app_with_key("acme"), "u1")
    with pytest.raises(ConnectionError):
        worker.handler(batch(aws, [json.dumps(d)]), Context())
    assert h.providers.get("log").sent == []


@pytest.mark.parametrize("damage", ["no records", "record not an object", "not from sqs",
                                    "no receipt handle", "body not a string", "receive count"])
def test_a_wrong_event_raises_before_anything_is_claimed(h: Harness, aws: MotoServer,
                                                         damage: str) -> None:
    [d] = deliveries(h, h.app_with_key("acme"), "u1")
    event = batch(aws, [json.dumps(d)])
    record = event["Records"][0]
    if damage == "no records":
        event = {"records": event["Records"]}
    elif damage == "record not an object":
        event["Records"].append(None)
    elif damage == "not from sqs":
        record["eventSource"] = "aws:kinesis"
    elif damage == "no receipt handle":
        del record["receiptHandle"]
    elif damage == "body not a string":
        record["body"] = d
    else:
        record["attributes"]["ApproximateReceiveCount"] = "many"
    with pytest.raises(BadEvent):
        worker.handler(event, Context())
    assert h.claims.asked == [] and h.providers.get("log").sent == []


def test_the_sample_batch_shape_is_accepted(h: Harness) -> None:
    """The sample's three messages name deliveries this store never had: all are dropped,
    and nothing needs SQS."""
    answer = worker.handler(sample("sqs_batch"), Context())
    assert answer == {"batchItemFailures": []}
    assert [len(a) for a in h.claims.asked] == [3]


def test_outbound_message_fields_survive(h: Harness, aws: MotoServer) -> None:
    [d] = deliveries(h, h.app_with_key("acme"), "u1")
    worker.handler(batch(aws, [json.dumps(d)]), Context())
    [m] = h.providers.get("log").sent
    assert isinstance(m, OutboundMessage)
    assert (m.delivery_id, m.target, m.title) == (d["delivery_id"], "token-u1", "for u1")
