"""The hub of the AWS mode against moto in server mode: the connection registry in the service's
DynamoDB table (the table of the SAM template: pk/sk, gsi1, gsi2), and events posted to the
connections through API Gateway's Management API under a stage, as a client receives them from
a node's WebSocket.

moto keeps what is posted to a connection, but it answers every connection id (it never says
GoneException), so a gone connection is made one with the server's fault injection, by path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.fakes.moto_server import MotoServer, function_environment
from tidings.adapters.hub.apigateway import ApiGatewayHub
from tidings.adapters.hub.connections import CONNECTION_TTL_SECONDS, Connections, parse_table_url
from tidings.domain.errors import NotConfigured, Unavailable
from tidings.domain.stream import (
    CLOSE_GONE,
    CLOSE_UNAUTHENTICATED,
    CREATED,
    READ,
    RESYNC,
    Kick,
    StreamEvent,
)
from tidings.entrypoints.stream import frames
from tidings.ports import Hub

REGION = "us-east-1"
TABLE = "tidings-test"
STAGE = "prod"
AT = datetime(2026, 11, 21, 9, 30, 15, 123000, tzinfo=UTC)


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """An empty moto with the service's table; the hub finds its credentials where a Lambda
    function would, in the environment."""
    moto = moto_server
    function_environment(monkeypatch)
    moto.reset()
    index = [{"IndexName": name,
              "KeySchema": [{"AttributeName": f"{name}pk", "KeyType": "HASH"},
                            {"AttributeName": f"{name}sk", "KeyType": "RANGE"}],
              "Projection": {"ProjectionType": "ALL"}} for name in ("gsi1", "gsi2")]
    dynamodb = moto.client("dynamodb", region=REGION)
    dynamodb.create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"}
                              for n in ("pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk")],
        GlobalSecondaryIndexes=index,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    dynamodb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={
        "Enabled": True, "AttributeName": "ttl"})
    moto.calls.clear()
    return moto


@pytest.fixture
async def hub(aws: MotoServer) -> AsyncIterator[ApiGatewayHub]:
    hub = ApiGatewayHub.from_urls(f"{aws.url}/{STAGE}",
                                  f"dynamodb://{TABLE}?region={REGION}&endpoint_url={aws.url}")
    await hub.start(lambda kick: None)
    yield hub
    await hub.close()


def event(user: str = "alice", seq: int = 1, app: str = "acme", kind: str = CREATED) -> StreamEvent:
    return StreamEvent(app, user, seq, kind, {"id": f"n{seq}", "title": "Hi", "to": user}, AT,
                       unread=seq + 1, unread_in_app=seq)


def sent(ev: StreamEvent) -> list[bytes]:
    """What a node's WebSocket sends for `ev`: the same two text documents."""
    return [frames.event(ev).encode(), frames.count(ev).encode()]


def posted(server: MotoServer) -> dict[str, list[bytes]]:
    """What each connection was sent, in order, by connection id (from the requests' paths)."""
    out: dict[str, list[bytes]] = {}
    for call in server.calls_of("PostToConnection"):
        out.setdefault(call.path.rsplit("/@connections/", 1)[1], []).append(call.body)
    return out


def path(connection_id: str) -> str:
    return f"/{STAGE}/@connections/{connection_id}"


def item(server: MotoServer, pk: str, sk: str) -> dict[str, Any] | None:
    answer = server.client("dynamodb", region=REGION).get_item(
        TableName=TABLE, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True)
    found: dict[str, Any] | None = answer.get("Item")
    return found


async def register(hub: ApiGatewayHub, *connections: tuple[str, str, str], at: datetime | None = None,
                   key_id: str | None = None) -> None:
    for app, user, connection_id in connections:
        await hub.connections.add(app, user, connection_id, at or datetime.now(UTC), key_id=key_id)


EVERYONE = (("acme", "alice", "c-a1"), ("acme", "alice", "c-a2"), ("acme", "bob", "c-b1"),
            ("other", "alice", "c-o1"), ("other", "carol", "c-o2"))


# -- the registry ------------------------------------------------------------------------------

async def test_a_connection_is_two_items_written_and_removed_together(aws: MotoServer,
                                                                      hub: ApiGatewayHub) -> None:
    await hub.connections.add("acme", "alice", "L0SM9cOFvHcCIhw=", AT, key_id="k1")

    user_item = item(aws, "A#acme#U#alice#WS", "C#L0SM9cOFvHcCIhw=")
    pointer = item(aws, "WS#L0SM9cOFvHcCIhw=", "WS")
    ttl = str(int(AT.timestamp()) + 3 * 3600)
    assert user_item == {
        "pk": {"S": "A#acme#U#alice#WS"}, "sk": {"S": "C#L0SM9cOFvHcCIhw="},
        "app_id": {"S": "acme"}, "user_id": {"S": "alice"}, "key_id": {"S": "k1"},
        "connection_id": {"S": "L0SM9cOFvHcCIhw="}, "connected_at": {"S": "2026-11-21T09:30:15.123Z"},
        "ttl": {"N": ttl}}
    assert pointer == {
        "pk": {"S": "WS#L0SM9cOFvHcCIhw="}, "sk": {"S": "WS"}, "app_id": {"S": "acme"},
        "user_id": {"S": "alice"}, "key_id": {"S": "k1"}, "ttl": {"N": ttl},
        "gsi1pk": {"S": "WS#A#acme"}, "gsi1sk": {"S": "C#L0SM9cOFvHcCIhw="}}
    assert CONNECTION_TTL_SECONDS == 3 * 3600
    # One transaction each way: never a user item without its pointer, or the reverse.
    transactions = [c for c in aws.calls if "TransactItems" in c.params]
    assert [len(c.params["TransactItems"]) for c in transactions] == [2]

    assert await hub.connections.remove("L0SM9cOFvHcCIhw=") == ("acme", "alice")
    assert item(aws, "A#acme#U#alice#WS", "C#L0SM9cOFvHcCIhw=") is None
    assert item(aws, "WS#L0SM9cOFvHcCIhw=", "WS") is None
    transactions = [c for c in aws.calls if "TransactItems" in c.params]
    assert [sorted(op for t in c.params["TransactItems"] for op in t) for c in transactions] == [
        ["Put", "Put"], ["Delete", "Delete"]]
    assert await hub.connections.remove("L0SM9cOFvHcCIhw=") is None


async def test_the_registry_reads_a_users_and_an_apps_live_connections(aws: MotoServer,
                                                                     hub: ApiGatewayHub) -> None:
    await register(hub, *EVERYONE)
    await register(hub, ("acme", "dave", "c-d1"), key_id="k1")
    await register(hub, ("acme", "dave", "c-d2"), key_id="k2")
    # Expired three hours after it opened: DynamoDB may not have deleted it yet.
    await register(hub, ("acme", "alice", "c-old"), ("acme", "erin", "c-old2"),
                   at=datetime.now(UTC) - timedelta(hours=3, seconds=5))
    # A user id may contain `#`: the items of user `alice#WS` (keyed `A#acme#U#alice#WS`, …) share
    # the partition of alice's connections, and are never taken for hers.
    aws.client("dynamodb", region=REGION).put_item(TableName=TABLE, Item={
        "pk": {"S": "A#acme#U#alice#WS"}, "sk": {"S": "C#c-not-hers"}, "app_id": {"S": "acme"},
        "user_id": {"S": "alice#WS"}, "connection_id": {"S": "c-not-hers"},
        "ttl": {"N": str(int(time.time()) + 3600)}})

    assert sorted(await hub.connections.of_user("acme", "alice")) == ["c-a1", "c-a2"]
    assert await hub.connections.of_user("other", "alice") == ["c-o1"]
    assert await hub.connections.of_user("acme", "nobody") == []
    assert await hub.connections.of_user("acme", "dave", key_id="k2") == ["c-d2"]
    assert sorted(await hub.connections.of_app("acme")) == [
        ("alice", "c-a1"), ("alice", "c-a2"), ("bob", "c-b1"),
        ("dave", "c-d1"), ("dave", "c-d2")]
    assert await hub.connections.of_app("acme", key_id="k1") == [("dave", "c-d1")]
    assert sorted(await hub.connections.of_app("other")) == [("alice", "c-o1"), ("carol", "c-o2")]


async def test_the_registry_reads_the_ttl_against_its_clock(aws: MotoServer) -> None:
    now = [AT.timestamp()]
    connections = Connections(TABLE, REGION, aws.url, clock=lambda: now[0])
    try:
        await connections.add("acme", "alice", "c1", AT)
        assert await connections.of_user("acme", "alice") == ["c1"]
        now[0] += CONNECTION_TTL_SECONDS - 1
        assert await connections.of_app("acme") == [("alice", "c1")]
        assert await connections.get("c1") == ("acme", "alice")
        assert await connections.get("c-unknown") is None
        now[0] += 1
        assert await connections.of_user("acme", "alice") == []
        assert await connections.of_app("acme") == []
        assert await connections.get("c1") is None
        with pytest.raises(ValueError, match="timezone"):
            await connections.add("acme", "alice", "c2", datetime(2026, 1, 1))
    finally:
        await connections.close()


# -- publishing ---------------------------------------------------------------------------------

async def test_frames_reach_exactly_the_users_connections_in_order(aws: MotoServer,
                                                                   hub: ApiGatewayHub) -> None:
    await register(hub, *EVERYONE)
    alice1, alice2, bob1 = event("alice", 1), event("alice", 2, kind=READ), event("bob", 7)

    await hub.publish([alice1, bob1, alice2])

    got = posted(aws)
    assert got == {"c-a1": sent(alice1) + sent(alice2), "c-a2": sent(alice1) + sent(alice2),
                   "c-b1": sent(bob1)}
    # The documents of the node's WebSocket, under the stage of the endpoint.
    assert got["c-b1"] == [b'{"id":"7","type":"notification.created","data":{"id":"n7","title":"Hi",'
                           b'"to":"bob"}}',
                           b'{"id":"7","type":"unread_count","data":{"count":7,"total":8}}']
    assert {c.path for c in aws.calls_of("PostToConnection")} == {
        path("c-a1"), path("c-a2"), path("c-b1")}
    # Another app's alice and carol got nothing.
    assert "c-o1" not in got and "c-o2" not in got
    # One consistent Query per user: a connection recorded just before is found.
    queries = [c.params for c in aws.calls if "KeyConditionExpression" in c.params]
    assert sorted(q["ExpressionAttributeValues"][":pk"]["S"] for q in queries) == [
        "A#acme#U#alice#WS", "A#acme#U#bob#WS"]
    assert all(q["ConsistentRead"] is True for q in queries)


async def test_an_apps_events_reach_its_users_only(aws: MotoServer, hub: ApiGatewayHub) -> None:
    await register(hub, *EVERYONE)
    theirs = event("alice", 3, app="other")

    await hub.publish([theirs])

    assert posted(aws) == {"c-o1": sent(theirs)}


async def test_a_gone_connection_is_forgotten_and_the_others_get_everything(
        aws: MotoServer, hub: ApiGatewayHub) -> None:
    await register(hub, *EVERYONE)
    aws.fail("PostToConnection", "GoneException", status=410, times=None, path=path("c-a1"))
    first, second = event("alice", 1), event("alice", 2)

    await hub.publish([first, second])

    got = posted(aws)
    assert got["c-a2"] == sent(first) + sent(second)
    assert len(got["c-a1"]) == 1  # the first frame found it gone; no more were tried
    assert item(aws, "A#acme#U#alice#WS", "C#c-a1") is None
    assert item(aws, "WS#c-a1", "WS") is None
    assert item(aws, "A#acme#U#alice#WS", "C#c-a2") is not None
    assert await hub.connections.of_user("acme", "alice") == ["c-a2"]

    aws.calls.clear()
    third = event("alice", 3)
    await hub.publish([third])
    assert posted(aws) == {"c-a2": sent(third)}


async def test_an_expired_connection_gets_nothing(aws: MotoServer, hub: ApiGatewayHub) -> None:
    await register(hub, ("acme", "alice", "c-old"), at=datetime.now(UTC) - timedelta(hours=4))
    await register(hub, ("acme", "alice", "c-new"))
    assert item(aws, "A#acme#U#alice#WS", "C#c-old") is not None  # still in the table

    ev = event("alice", 1)
    await hub.publish([ev])

    assert posted(aws) == {"c-new": sent(ev)}


async def test_a_failing_connection_costs_the_others_nothing(aws: MotoServer,
                                                             hub: ApiGatewayHub) -> None:
    await register(hub, *EVERYONE)
    # Refused (not gone): each frame is tried, and the connection is kept.
    aws.fail("PostToConnection", "ForbiddenException", status=403, times=None, path=path("c-a1"))
    aws.fail("PostToConnection", "PayloadTooLargeException", status=413, times=1, path=path("c-b1"))
    alice1, alice2, bob1, bob2 = event("alice", 1), event("alice", 2), event("bob", 1), event("bob", 2)

    await hub.publish([alice1, alice2, bob1, bob2])

    got = posted(aws)
    assert got["c-a2"] == sent(alice1) + sent(alice2)
    assert len(got["c-a1"]) == 4
    assert got["c-b1"][1:] == sent(bob1)[1:] + sent(bob2)  # the refused frame alone is missing
    assert sorted(await hub.connections.of_user("acme", "alice")) == ["c-a1", "c-a2"]


async def test_a_user_whose_connections_cannot_be_read_costs_the_others_nothing(
        aws: MotoServer, hub: ApiGatewayHub, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    await register(hub, *EVERYONE)
    of_user = hub.connections.of_user

    async def failing(app_id: str, user_id: str, *, key_id: str | None = None) -> list[str]:
        if user_id == "bob":
            raise OSError("connection reset")
        return await of_user(app_id, user_id, key_id=key_id)

    monkeypatch.setattr(hub.connections, "of_user", failing)
    await hub.publish([event("bob", 1), event("alice", 1)])

    assert set(posted(aws)) == {"c-a1", "c-a2"}
    assert "could not read the WebSocket connections of acme/" in caplog.text
    assert "bob" not in caplog.text  # user ids are masked in the log


async def test_many_connections_each_get_every_frame_in_order(aws: MotoServer,
                                                              hub: ApiGatewayHub) -> None:
    await register(hub, *(("acme", "alice", f"c{i:02}") for i in range(40)))
    events = [event("alice", seq) for seq in range(1, 4)]

    await hub.publish(events)

    expected = [frame for ev in events for frame in sent(ev)]
    got = posted(aws)
    assert sorted(got) == [f"c{i:02}" for i in range(40)]
    assert all(frames_of_one == expected for frames_of_one in got.values())


async def test_posts_are_concurrent_and_bounded(aws: MotoServer) -> None:
    """With an injected Management API client that holds every post until the test lets it go."""

    class Holding:
        def __init__(self) -> None:
            self.in_flight = 0
            self.most = 0
            self.frames: dict[str, list[bytes]] = {}
            self.reached = asyncio.Event()
            self.release = asyncio.Event()

        async def post_to_connection(self, ConnectionId: str, Data: bytes) -> dict[str, Any]:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            if self.in_flight == 3:
                self.reached.set()
            await self.release.wait()
            self.frames.setdefault(ConnectionId, []).append(Data)
            self.in_flight -= 1
            return {}

    management = Holding()
    hub = ApiGatewayHub(f"https://abc123.execute-api.{REGION}.amazonaws.com/{STAGE}", TABLE, REGION,
                        aws.url, management_client=management, concurrency=3)
    try:
        await register(hub, *(("acme", "alice", f"c{i}") for i in range(8)))
        ev = event("alice", 1)
        publishing = asyncio.create_task(hub.publish([ev]))
        await asyncio.wait_for(management.reached.wait(), 10)
        management.release.set()
        await asyncio.wait_for(publishing, 10)
        assert management.most == 3  # never a fourth at once, and three did run at once
        assert management.frames == {f"c{i}": sent(ev) for i in range(8)}
    finally:
        await hub.close()


async def test_resync_markers_are_never_posted(aws: MotoServer, hub: ApiGatewayHub) -> None:
    await register(hub, *EVERYONE)
    await hub.publish([StreamEvent("acme", "alice", 0, RESYNC, {}, AT)])
    await hub.publish([])
    assert posted(aws) == {}


# -- kicks and the rest of the port ------------------------------------------------------------

async def test_a_user_kick_closes_that_users_connections(aws: MotoServer, hub: ApiGatewayHub) -> None:
    kicked: list[Kick] = []
    await hub.start(kicked.append)
    await register(hub, *EVERYONE)
    aws.fail("DeleteConnection", "GoneException", status=410, path=path("c-a2"))  # left already
    kick = Kick(CLOSE_GONE, "the user was deleted", app_id="acme", user_id="alice")

    await hub.kick(kick)

    assert kicked == [kick]
    assert sorted(c.path for c in aws.calls_of("DeleteConnection")) == [path("c-a1"), path("c-a2")]
    assert await hub.connections.of_user("acme", "alice") == []
    assert item(aws, "WS#c-a1", "WS") is None and item(aws, "WS#c-a2", "WS") is None
    assert await hub.connections.of_user("other", "alice") == ["c-o1"]
    assert await hub.connections.of_user("acme", "bob") == ["c-b1"]


async def test_an_app_kick_closes_the_connections_its_key_opened(aws: MotoServer,
                                                                hub: ApiGatewayHub) -> None:
    await register(hub, ("acme", "alice", "c-k1"), ("acme", "bob", "c-k1b"), key_id="k1")
    await register(hub, ("acme", "alice", "c-k2"), key_id="k2")
    await register(hub, ("other", "alice", "c-o1"), key_id="k1")
    # DeleteConnection fails: the connection is forgotten all the same and gets nothing more.
    aws.fail("DeleteConnection", "ForbiddenException", status=403, times=None, path=path("c-k1b"))

    await hub.kick(Kick(CLOSE_UNAUTHENTICATED, "the key was revoked", app_id="acme", key_id="k1"))

    assert sorted({c.path for c in aws.calls_of("DeleteConnection")}) == [path("c-k1"), path("c-k1b")]
    assert await hub.connections.of_app("acme") == [("alice", "c-k2")]
    assert await hub.connections.of_app("other") == [("alice", "c-o1")]

    aws.calls.clear()
    await hub.kick(Kick(CLOSE_GONE, "the app was deleted", app_id="acme"))
    assert [c.path for c in aws.calls_of("DeleteConnection")] == [path("c-k2")]
    assert await hub.connections.of_app("acme") == []
    # A kick for every app's streams cannot be applied here (it would scan the table).
    await hub.kick(Kick(CLOSE_UNAUTHENTICATED, "the key was revoked", key_id="k1"))
    assert await hub.connections.of_app("other") == [("alice", "c-o1")]


async def test_a_kick_whose_connections_cannot_be_read_raises_unavailable(
        hub: ApiGatewayHub, monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(app_id: str, *, key_id: str | None = None) -> list[tuple[str, str]]:
        raise OSError("connection reset")

    monkeypatch.setattr(hub.connections, "of_app", failing)
    with pytest.raises(Unavailable, match="could not read"):
        await hub.kick(Kick(CLOSE_GONE, "the app was deleted", app_id="acme"))


async def test_nothing_subscribes_to_this_hub(hub: ApiGatewayHub) -> None:
    port: Hub = hub
    with pytest.raises(NotConfigured, match="WebSocket API"):
        await port.subscribe("acme", "alice", lambda ev: None)


async def test_injected_clients_stay_their_owners(aws: MotoServer) -> None:
    from aiobotocore.session import AioSession

    session = AioSession()
    async with session.create_client("dynamodb", region_name=REGION, endpoint_url=aws.url) as dynamodb, \
            session.create_client("apigatewaymanagementapi", region_name=REGION,
                                  endpoint_url=f"{aws.url}/{STAGE}") as management:
        hub = ApiGatewayHub(f"https://abc123.execute-api.{REGION}.amazonaws.com/{STAGE}", TABLE,
                            REGION, dynamodb_client=dynamodb, management_client=management)
        await hub.connections.add("acme", "alice", "c1", datetime.now(UTC))
        ev = event("alice", 1)
        await hub.publish([ev])
        await hub.close()
        assert posted(aws) == {"c1": sent(ev)}
        # Still open after the hub closed.
        answer = await dynamodb.describe_table(TableName=TABLE)
        assert answer["Table"]["TableName"] == TABLE
        await management.post_to_connection(ConnectionId="c1", Data=b"{}")


def test_configuration_is_checked() -> None:
    assert parse_table_url("dynamodb://tidings?region=eu-west-1") == ("tidings", "eu-west-1", None)
    assert parse_table_url("dynamodb://tbl?region=us-east-1&endpoint_url=http://127.0.0.1:4566") == (
        "tbl", "us-east-1", "http://127.0.0.1:4566")
    for url in ("dynamodb://tidings", "dynamodb://?region=eu-west-1", "postgresql://x?region=a"):
        with pytest.raises(NotConfigured, match="dynamodb://"):
            parse_table_url(url)
    with pytest.raises(NotConfigured, match="https://"):
        ApiGatewayHub("wss://abc123.execute-api.eu-west-1.amazonaws.com/prod", TABLE, REGION)


async def test_the_composition_root_lends_the_stores_dynamodb_client_to_the_hub(dynamodb_server):
    """One DynamoDB client and connection pool a process: the hub's registry of connections
    reads the store's table with the store's client, and closing the hub leaves it open."""
    from tests.conftest import dynamodb_store, make_settings
    from tidings.bootstrap import build

    async with dynamodb_store(dynamodb_server) as store:
        settings = make_settings(database_url=store.url,
                                 websocket_endpoint=f"{dynamodb_server.url}/prod")
        container = build(settings, store=store)
        hub = container.streams.hub
        assert await hub.connections._client.get() is await store.table.client()
        await hub.close()
        await store.ping()  # still open
