"""The AWS serverless mode end to end, through its Lambda functions only, with moto in server mode
(on loopback) as all of AWS: the table on DynamoDB with its stream, the delivery queue on SQS,
the WebSocket API's Management API, and SNS as the app's push provider.

Every function builds its container from the environment, as on Lambda (no container is handed
in): the HTTP API creates the app and sends; the WebSocket function records a connection that
the API then posts the events to; the table's stream, read back from moto, goes to the outbox
function as Lambda hands it over, which queues the delivery; the queue's messages go to the
worker as the SQS event source hands them over, which sends the push through SNS.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.aws_lambda.conftest import REGION, Context, sample
from tests.conftest import ADMIN_KEY, SECRET_KEY
from tests.fakes.moto_server import MotoServer, function_environment, sns_backend
from tidings.adapters.store.dynamodb.store import DynamoStore
from tidings.entrypoints.aws_lambda import events, http, outbox, runtime, scheduler, websocket, worker

STAGE = "prod"
QUEUE = "tidings-deliveries"


@dataclass
class Lambda:
    """The AWS account of one deployment on moto, and the functions' doors into it."""

    server: MotoServer
    table: str
    queue_url: str
    queue_arn: str
    android: str  # the SNS platform application ARN
    secrets: tuple[str, str]  # the ARNs of the secret key's and the admin key's secrets

    def secret_reads(self) -> list[str]:
        """The secrets the functions read from Secrets Manager, in order."""
        return [c.params.get("SecretId", "") for c in self.server.calls
                if c.service == "secretsmanager" and c.params.get("SecretId") in self.secrets]

    def aws(self, service: str) -> Any:
        return self.server.client(service, region=REGION)

    # -- HTTP API (payload format 2.0) --------------------------------------------------
    def http(self, method: str, path: str, *, key: str, body: Any = None) -> tuple[int, Any]:
        event = sample("http_get" if method == "GET" else "http_post")
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["requestContext"]["http"]["method"] = method
        event["requestContext"]["requestId"] = uuid.uuid4().hex[:16]
        event["rawQueryString"] = ""
        event.pop("queryStringParameters", None)
        event["headers"].pop("idempotency-key", None)
        event["headers"]["authorization"] = f"Bearer {key}"
        if body is None:
            event.pop("body", None)
            event["headers"].pop("content-type", None)
            event["headers"]["content-length"] = "0"
        else:
            raw = json.dumps(body)
            event["body"], event["isBase64Encoded"] = raw, False
            event["headers"]["content-type"] = "application/json"
            event["headers"]["content-length"] = str(len(raw.encode()))
        answer = http.handler(event, Context())
        text = answer.get("body") or ""
        if answer.get("isBase64Encoded"):
            text = base64.b64decode(text).decode()
        return answer["statusCode"], json.loads(text) if text else None

    # -- WebSocket API ------------------------------------------------------------------
    def ws(self, route: str, connection_id: str, token: str | None = None) -> dict[str, Any]:
        event = sample("ws_disconnect" if route == "$disconnect" else "ws_connect")
        event["requestContext"]["connectionId"] = connection_id
        event["requestContext"]["routeKey"] = route
        if token is not None:
            event["queryStringParameters"] = {"token": token}
            event["multiValueQueryStringParameters"] = {"token": [token]}
        return websocket.handler(event, Context())

    def posted(self, connection_id: str) -> list[dict[str, Any]]:
        """The frames the Management API received for a connection, in order."""
        return [json.loads(c.body) for c in self.server.calls_of("PostToConnection")
                if c.path == f"/{STAGE}/@connections/{connection_id}"]

    def connection_items(self, connection_id: str) -> list[dict[str, Any]]:
        answer = self.aws("dynamodb").scan(
            TableName=self.table, ConsistentRead=True,
            FilterExpression="connection_id = :c OR pk = :p",
            ExpressionAttributeValues={":c": {"S": connection_id}, ":p": {"S": f"WS#{connection_id}"}})
        items: list[dict[str, Any]] = answer["Items"]
        return items

    # -- the table's stream, as Lambda's event source mapping reads it ------------------
    def stream_event(self, after: str | None = None) -> tuple[dict[str, Any], str | None]:
        """The records of the table's stream after sequence number `after`, as the event
        Lambda hands the outbox function; and the last sequence number read."""
        arn = self.aws("dynamodb").describe_table(TableName=self.table)["Table"]["LatestStreamArn"]
        streams = self.aws("dynamodbstreams")
        shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        records: list[dict[str, Any]] = []
        for shard in shards:
            where = ({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
                     if after else {"ShardIteratorType": "TRIM_HORIZON"})
            iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                                  **where)["ShardIterator"]
            records.extend(streams.get_records(ShardIterator=iterator, Limit=1000)["Records"])
        last = records[-1]["dynamodb"]["SequenceNumber"] if records else after
        return {"Records": [_jsonable({**r, "eventSourceARN": arn}) for r in records]}, last

    # -- the delivery queue, as the SQS event source reads it --------------------------
    def receive(self) -> list[dict[str, Any]]:
        answer = self.aws("sqs").receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
            AttributeNames=["All"], VisibilityTimeout=30)
        messages: list[dict[str, Any]] = answer.get("Messages", [])
        return messages

    def sqs_event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        shape = sample("sqs_batch")["Records"][0]
        records = []
        for m in messages:
            record = json.loads(json.dumps(shape))
            record.update(messageId=m["MessageId"], receiptHandle=m["ReceiptHandle"],
                          body=m["Body"], md5OfBody=m["MD5OfBody"], eventSourceARN=self.queue_arn,
                          awsRegion=REGION)
            record["attributes"] = {
                "ApproximateReceiveCount": m["Attributes"]["ApproximateReceiveCount"],
                "SentTimestamp": m["Attributes"]["SentTimestamp"],
                "SenderId": m["Attributes"].get("SenderId", "AROAEXAMPLE"),
                "ApproximateFirstReceiveTimestamp":
                    m["Attributes"].get("ApproximateFirstReceiveTimestamp", "0")}
            records.append(record)
        return {"Records": records}


def _jsonable(value: Any) -> Any:
    """What boto3 parsed, back as the JSON Lambda sends: times as epoch seconds, binary as
    base64."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


@pytest.fixture
def deployment(dynamodb_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lambda]:
    """A fresh table (with its stream), queue and SNS platform application on moto, the
    functions' environment set as the template sets it, and a process's runtime made anew."""
    server = dynamodb_server
    function_environment(monkeypatch, REGION)
    suffix = uuid.uuid4().hex[:10]
    table = f"tidings-flow-{suffix}"
    url = f"dynamodb://{table}?region={REGION}&endpoint_url={server.url}"

    async def migrate() -> None:  # the template makes the table before any function runs
        store = DynamoStore(url, stream=True)
        try:
            await store.migrate()
        finally:
            await store.close()

    asyncio.run(migrate())
    sqs = server.client("sqs", region=REGION)
    queue_url = sqs.create_queue(QueueName=f"{QUEUE}-{suffix}",
                                 Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    android = server.client("sns", region=REGION).create_platform_application(
        Name=f"droid-{suffix}", Platform="GCM",
        Attributes={"PlatformCredential": "fcm-key"})["PlatformApplicationArn"]
    # The keys as the template hands them over: the ARNs of their secrets (encrypted with the
    # stack's KMS key), which each function reads at its cold start; the admin key's secret
    # holds the key without its "tda_" prefix.
    key_id = server.client("kms", region=REGION).create_key(Description="stack key")["KeyMetadata"]["Arn"]
    secrets = server.client("secretsmanager", region=REGION)
    secret_arn = secrets.create_secret(Name=f"tidings-secret-key-{suffix}", KmsKeyId=key_id,
                                       SecretString=SECRET_KEY)["ARN"]
    admin_arn = secrets.create_secret(Name=f"tidings-admin-key-{suffix}", KmsKeyId=key_id,
                                      SecretString=ADMIN_KEY.removeprefix("tda_"))["ARN"]
    for name in ("SECRET_KEY", "ADMIN_KEY"):
        monkeypatch.delenv(f"TIDINGS_{name}", raising=False)
    for name, value in (("DATABASE_URL", url), ("QUEUE_URL", queue_url),
                        ("WEBSOCKET_ENDPOINT", f"{server.url}/{STAGE}"),
                        ("SECRET_KEY_ARN", secret_arn), ("ADMIN_KEY_ARN", admin_arn)):
        monkeypatch.setenv(f"TIDINGS_{name}", value)
    previous = runtime.install(None)  # the next invocation makes the process's runtime
    try:
        yield Lambda(server, table, queue_url, queue_arn, android, (secret_arn, admin_arn))
    finally:
        made = runtime.install(previous)
        if made is not None:
            made.close()
        with contextlib.suppress(Exception):
            server.client("dynamodb", region=REGION).delete_table(TableName=table)
        with contextlib.suppress(Exception):
            sqs.delete_queue(QueueUrl=queue_url)


def test_a_push_goes_from_the_api_through_the_stream_and_queue_to_sns(deployment: Lambda) -> None:
    aws = deployment
    assert aws.secret_reads() == []
    # The HTTP API: the app (its push through SNS on moto), a key, ada's phone, ada's token.
    status, body = aws.http("PUT", "/v1/apps/acme", key=ADMIN_KEY, body={
        "name": "Acme",
        "providers": {"sns": {"region": REGION, "endpoint_url": aws.server.url,
                              "access_key_id": "testing", "secret_access_key": "testing",
                              "platform_applications": {"android": aws.android}}},
        "routing": {"push": {"android": "sns"}}})
    assert status == 201, body
    status, body = aws.http("POST", "/v1/apps/acme/keys", key=ADMIN_KEY)
    assert status == 201, body
    app_key = body["key"]
    # The operator's key and the secret key came from Secrets Manager, once for the process.
    assert sorted(aws.secret_reads()) == sorted(aws.secrets)
    settings = runtime.current().settings
    assert settings.secret_key is not None and settings.secret_key.get_secret_value() == SECRET_KEY
    assert settings.admin_key is not None and settings.admin_key.get_secret_value() == ADMIN_KEY
    status, device = aws.http("POST", "/v1/users/ada/devices", key=app_key,
                              body={"platform": "android", "token": "fcm-token-of-ada"})
    assert status in (200, 201), device
    status, body = aws.http("POST", "/v1/users/ada/tokens", key=app_key)
    assert status == 200, body
    user_token = body["token"]
    # The stream so far (the app, the key, the device ...) holds no delivery.
    event, seen = aws.stream_event()
    assert event["Records"], "the table has no stream records: is its stream on?"
    assert outbox.handler(event, Context())["queued"] == 0
    assert aws.receive() == []

    # $connect with ada's token: the connection is recorded in the table.
    connection = f"Cx{uuid.uuid4().hex[:12]}="
    assert aws.ws("$connect", connection, token=user_token)["statusCode"] == 200
    assert aws.connection_items(connection), "the connection was not stored"

    # The send: accepted, and its events posted to ada's connection by the API function.
    status, body = aws.http("POST", "/v1/notifications", key=app_key, body={
        "to": {"user_id": "ada"}, "channels": ["push", "in_app"], "title": "Shipped",
        "body": "Your order is on its way"})
    assert status == 202, body
    (notification,) = body["items"]
    nid = notification["id"]
    frames = aws.posted(connection)
    assert [f["type"] for f in frames] == ["notification.created", "unread_count"], frames
    assert frames[0]["data"]["id"] == nid and frames[0]["id"] == frames[1]["id"]
    assert frames[1]["data"]["count"] == 1
    status, before = aws.http("GET", f"/v1/notifications/{nid}", key=app_key)
    assert status == 200, before
    pending = {d["id"] for d in before["deliveries"] if d["status"] == "pending"}
    (push,) = [d for d in before["deliveries"] if d["channel"] == "push"]
    assert pending == {push["id"]}, before["deliveries"]

    # The outbox: the table's new stream records, as Lambda hands them over -> the queue.
    event, seen = aws.stream_event(seen)
    summary = outbox.handler(event, Context())
    assert summary["queued"] == 1 and summary["records"] == len(event["Records"]), summary
    messages = aws.receive()
    assert [json.loads(m["Body"]) for m in messages] == [
        {"app_id": "acme", "notification_id": nid, "delivery_id": push["id"]}]

    # The worker: the queue's batch, as the SQS event source hands it over -> SNS.
    batch = aws.sqs_event(messages)
    assert worker.handler(batch, Context()) == {"batchItemFailures": []}
    # The same batch handed out again (SQS delivers at least once) sends nothing twice.
    assert worker.handler(batch, Context()) == {"batchItemFailures": []}
    for m in messages:  # the event source mapping deletes what the function did not fail
        aws.aws("sqs").delete_message(QueueUrl=aws.queue_url, ReceiptHandle=m["ReceiptHandle"])
    status, after = aws.http("GET", f"/v1/notifications/{nid}", key=app_key)
    assert status == 200, after
    (sent,) = [d for d in after["deliveries"] if d["channel"] == "push"]
    assert sent["status"] == "sent" and sent["provider"] == "sns", sent
    assert sent["provider_message_id"] and sent["target"] == device["id"]
    endpoints = [e for e in sns_backend(REGION).platform_endpoints.values()
                 if e.application.arn == aws.android]
    (endpoint,) = endpoints
    assert endpoint.token == "fcm-token-of-ada"
    assert list(endpoint.messages) == [sent["provider_message_id"]]
    assert "Shipped" in json.dumps(json.loads(endpoint.messages[sent["provider_message_id"]]))

    # The inbox: listed unread, then read; the read reaches the connection; nothing unread.
    status, inbox = aws.http("GET", "/v1/users/me/notifications", key=user_token)
    assert status == 200, inbox
    assert [(n["id"], n["read_at"]) for n in inbox["items"]] == [(nid, None)]
    assert inbox["unread_count"] == 1
    status, body = aws.http("POST", f"/v1/users/me/notifications/{nid}/read", key=user_token)
    assert status in (200, 204), body
    frames = aws.posted(connection)[2:]
    assert [f["type"] for f in frames] == ["notification.read", "unread_count"], frames
    assert frames[1]["data"]["count"] == 0 and frames[1]["data"]["total"] == 0
    status, inbox = aws.http("GET", "/v1/users/me/notifications", key=user_token)
    assert status == 200 and inbox["unread_count"] == 0, inbox
    assert inbox["items"][0]["read_at"]

    # Nothing more is queued by what came after (the delivery's update, the read).
    event, seen = aws.stream_event(seen)
    assert outbox.handler(event, Context())["queued"] == 0
    assert aws.receive() == []

    # $disconnect forgets the connection.
    assert aws.ws("$disconnect", connection)["statusCode"] == 200
    assert aws.connection_items(connection) == []
    # Every function of this process shared the keys read at its cold start.
    assert sorted(aws.secret_reads()) == sorted(aws.secrets)


def test_a_delivery_whose_message_was_lost_is_queued_again_by_the_scheduler(
        deployment: Lambda, monkeypatch: pytest.MonkeyPatch) -> None:
    """The outbox never forwards the delivery (its batch was given up, or its message went to
    the dead-letter queue): the scheduler finds it overdue and queues it again, and the worker
    delivers it once."""
    aws = deployment
    status, _ = aws.http("PUT", "/v1/apps/acme", key=ADMIN_KEY, body={"name": "Acme"})
    assert status == 201
    status, body = aws.http("POST", "/v1/apps/acme/keys", key=ADMIN_KEY)
    app_key = body["key"]
    status, _ = aws.http("POST", "/v1/users/ada/devices", key=app_key,
                         body={"platform": "android", "token": "fcm-token-of-ada"})
    assert status in (200, 201)
    status, body = aws.http("POST", "/v1/notifications", key=app_key, body={
        "to": {"user_id": "ada"}, "channels": ["push"], "title": "Lost and found"})
    assert status == 202, body
    nid = body["items"][0]["id"]
    assert aws.receive() == []  # the outbox did not run: nothing was queued

    # Not overdue yet: nothing to do.
    assert scheduler.handler(sample("scheduled"), Context(remaining_ms=6_500))["requeued"] == 0
    monkeypatch.setattr(scheduler, "OVERDUE", timedelta(0))
    summary = scheduler.handler(sample("scheduled"), Context(remaining_ms=6_500))
    assert summary["requeued"] == 1, summary
    messages = aws.receive()
    assert [json.loads(m["Body"])["notification_id"] for m in messages] == [nid]
    assert worker.handler(aws.sqs_event(messages), Context()) == {"batchItemFailures": []}
    status, after = aws.http("GET", f"/v1/notifications/{nid}", key=app_key)
    assert [d["status"] for d in after["deliveries"]] == ["sent"], after
    # Done: the next round finds nothing overdue.
    assert scheduler.handler(sample("scheduled"), Context(remaining_ms=6_500))["requeued"] == 0


def test_events_of_the_wrong_shape_are_refused(deployment: Lambda) -> None:
    """An event of another source never reaches the app, the table or the queue."""
    aws = deployment
    answer = http.handler(sample("sqs_batch"), Context())
    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["status"] == 400
    assert websocket.handler(sample("http_post"), Context()) == {"statusCode": 400}
    with pytest.raises(events.BadEvent, match="aws:dynamodb"):
        outbox.handler(sample("sqs_batch"), Context())
    with pytest.raises(events.BadEvent, match="aws:sqs"):
        worker.handler(sample("dynamodb_stream"), Context())
    assert aws.receive() == []
