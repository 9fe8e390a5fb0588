"""The Lambda functions driven as Lambda drives them: a sample event (tests/fixtures/events) and a
context, into the handler, on the runtime's own event loop, with a container on SQLite installed
through the runtime's seam. The tests are plain functions: the handlers run their loop
themselves, as they do on Lambda."""

from __future__ import annotations

import base64
import copy
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from tests.conftest import ADMIN_KEY, make_settings
from tests.fakes.clock import FakeClock
from tests.fakes.moto_server import MotoServer, function_environment
from tests.fakes.providers import ScriptedFactory
from tidings.adapters.hub.memory import MemoryHub
from tidings.adapters.store.sql.store import SqlStore
from tidings.bootstrap import Container, build
from tidings.domain.delivery import Claim
from tidings.domain.notifications import DeliveryStatus
from tidings.entrypoints.aws_lambda import http, runtime
from tidings.entrypoints.aws_lambda.runtime import Runtime

EVENTS = Path(__file__).resolve().parent.parent / "fixtures" / "events"
REGION = "us-east-1"


def sample(name: str) -> dict[str, Any]:
    """A fresh copy of a sample event."""
    return copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))


class Context:
    """The parts of Lambda's context object the functions read."""

    def __init__(self, remaining_ms: int = 60_000, function: str = "tidings-test") -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = function
        self._deadline = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class FakeConnections:
    def __init__(self) -> None:
        self.open: dict[str, tuple[str, str, str | None]] = {}
        self.calls: list[str] = []

    async def add(self, app_id: str, user_id: str, connection_id: str, at: datetime, *,
                  key_id: str | None = None) -> None:
        assert at.tzinfo is not None
        self.calls.append("add")
        self.open[connection_id] = (app_id, user_id, key_id)

    async def remove(self, connection_id: str) -> tuple[str, str] | None:
        self.calls.append("remove")
        found = self.open.pop(connection_id, None)
        return None if found is None else (found[0], found[1])

    async def get(self, connection_id: str) -> tuple[str, str] | None:
        found = self.open.get(connection_id)
        return None if found is None else (found[0], found[1])


class FakePoster:
    def __init__(self) -> None:
        self.posted: list[tuple[str, bytes]] = []
        self.gone: set[str] = set()

    async def post(self, connection_id: str, data: bytes) -> bool:
        if connection_id in self.gone:
            return False
        self.posted.append((connection_id, data))
        return True

    def frames(self, connection_id: str) -> list[dict[str, Any]]:
        return [json.loads(d) for c, d in self.posted if c == connection_id]


class SqlClaims:
    """What the DynamoDB store's `claim_ids` answers, from the SQL store: the due ones among the
    deliveries asked for, claimed under the lease, and when each pending one that is not yet
    due will be."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.asked: list[list[tuple[str, str, str]]] = []

    async def __call__(self, ids: Sequence[tuple[str, str, str]], now: datetime,
                       lease_seconds: float, lease_id: str) -> tuple[list[Claim], dict[str, datetime]]:
        self.asked.append(list(ids))
        wanted = {d for _, _, d in ids}
        async with self.store.transaction() as tx:
            claims = await tx.deliveries.claim(now, 1000, lease_seconds, lease_id)
        assert {c.delivery_id for c in claims} <= wanted, "the test queued a delivery it did not ask for"
        mine = {c.delivery_id for c in claims}
        not_due: dict[str, datetime] = {}
        async with self.store.reader() as tx:
            for app_id, notification_id, delivery_id in ids:
                if delivery_id in mine:
                    continue
                n = await tx.notifications.get(app_id, notification_id)
                for d in n.deliveries if n else ():
                    if d.id == delivery_id and d.status == DeliveryStatus.PENDING and d.due_at:
                        not_due[d.id] = d.due_at
        return claims, not_due


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: dict[str, Any]
    body: Any = field(default=None)


@dataclass
class Harness:
    rt: Runtime
    container: Container
    store: SqlStore
    clock: FakeClock
    providers: ScriptedFactory
    connections: FakeConnections
    poster: FakePoster
    claims: SqlClaims

    def run(self, work: Any) -> Any:
        return self.rt.run(work)

    def http(self, method: str, path: str, *, json_body: Any = None, key: str | None = None,
             query: str = "", headers: dict[str, str] | None = None,
             encode: bool = False) -> Reply:
        """A request as API Gateway's HTTP API hands it to the function."""
        event = sample("http_get" if method == "GET" else "http_post")
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["requestContext"]["http"]["method"] = method
        event["requestContext"]["requestId"] = uuid.uuid4().hex[:16]
        event["rawQueryString"] = query
        pairs = parse_qsl(query, keep_blank_values=True)
        if pairs:
            event["queryStringParameters"] = {k: ",".join(v for kk, v in pairs if kk == k)
                                              for k, _ in pairs}
        else:
            event.pop("queryStringParameters", None)
        event["headers"].pop("idempotency-key", None)
        if key is None:
            event["headers"].pop("authorization")
        else:
            event["headers"]["authorization"] = f"Bearer {key}"
        event["headers"].update(headers or {})
        if json_body is not None:
            raw = json.dumps(json_body).encode()
            event["headers"]["content-length"] = str(len(raw))
            event["body"] = base64.b64encode(raw).decode() if encode else raw.decode()
            event["isBase64Encoded"] = encode
        else:
            event.pop("body", None)
            event["headers"].pop("content-type", None)
            event["headers"]["content-length"] = "0"
        return self.call_http(event)

    def call_http(self, event: dict[str, Any]) -> Reply:
        answer = http.handler(event, Context())
        assert set(answer) <= {"statusCode", "headers", "body", "isBase64Encoded", "cookies"}, answer
        text = answer.get("body", "")
        if answer.get("isBase64Encoded"):
            text = base64.b64decode(text).decode()
        body = json.loads(text) if text else None
        return Reply(answer["statusCode"], answer.get("headers") or {}, answer, body)

    def app_with_key(self, app_id: str = "acme") -> str:
        """Creates an app through the function and returns a secret key of it."""
        r = self.http("PUT", f"/v1/apps/{app_id}", json_body={"name": app_id.title()}, key=ADMIN_KEY)
        assert r.status in (200, 201), r.body
        r = self.http("POST", f"/v1/apps/{app_id}/keys", key=ADMIN_KEY)
        assert r.status == 201, r.body
        return str(r.body["key"])

    def user_token(self, key: str, user_id: str) -> str:
        r = self.http("POST", f"/v1/users/{user_id}/tokens", key=key)
        assert r.status == 200, r.body
        return str(r.body["token"])


@pytest.fixture
def make_harness(tmp_path: Path) -> Iterator[Any]:
    made: list[tuple[Harness, Runtime | None]] = []

    def make(sqs: Any = None, claims: Any = None, webhook_sender: Any = None,
             management_api: bool = False, **overrides: Any) -> Harness:
        """`overrides`: settings; `sqs`: an SQS client (else one on the queue URL's host);
        `claims`: what claims deliveries by id (else `SqlClaims`); `webhook_sender`: what
        POSTs the apps' events; `management_api`: frames go to the Management API of the
        `websocket_endpoint` setting (else to a `FakePoster`)."""
        clock = FakeClock()
        providers = ScriptedFactory()
        store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / f'tidings{len(made)}.db'}")
        # The in-process hub: these tests read what the functions do, not what the hub posts.
        container = build(make_settings(**overrides), store=store, clock=clock,
                          provider_factory=providers, webhook_sender=webhook_sender,
                          hub=MemoryHub())
        connections, poster, sql_claims = FakeConnections(), FakePoster(), SqlClaims(store)
        rt = Runtime(container=container, connections=connections,
                     poster=None if management_api else poster,
                     claims=claims or sql_claims, sqs=sqs, json_logs=False)
        harness = Harness(rt, container, store, clock, providers, connections, poster, sql_claims)
        made.append((harness, runtime.install(rt)))
        # On DynamoDB the table is there before any function runs (the template makes it);
        # here, the schema.
        harness.run(store.migrate())
        return harness

    yield make
    for harness, previous in reversed(made):
        runtime.install(previous)
        harness.run(harness.container.close())
        harness.rt.close()


@pytest.fixture
def harness(make_harness: Any) -> Harness:
    return make_harness()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """moto emptied, and credentials where a function finds them: in the environment."""
    function_environment(monkeypatch, REGION)
    moto_server.reset()
    return moto_server


def queue(server: MotoServer, name: str = "tidings-deliveries") -> str:
    return str(server.client("sqs", region=REGION).create_queue(
        QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"])


def queued_messages(name: str = "tidings-deliveries") -> list[Any]:
    """moto's own record of the queue's messages (the server runs in this process)."""
    from moto.sqs.models import sqs_backends

    from tests.fakes.moto_server import ACCOUNT_ID

    return list(sqs_backends[ACCOUNT_ID][REGION].queues[name]._messages)
