"""The WebSocket API function: who may connect, what a client's frames get back, and leaving."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.aws_lambda.conftest import Context, Harness, sample
from tests.conftest import ADMIN_KEY
from tests.fakes.moto_server import MotoServer
from tidings.entrypoints.aws_lambda import websocket

CONNECTION = "BFHPhfCWIAMCKlQ="


def connect(query: dict[str, str] | None = None, authorization: str | None = None,
            connection_id: str = CONNECTION) -> dict[str, Any]:
    event = sample("ws_connect")
    event["requestContext"]["connectionId"] = connection_id
    if query is None:
        event.pop("queryStringParameters")
        event.pop("multiValueQueryStringParameters")
    else:
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    if authorization is not None:
        event["headers"]["Authorization"] = authorization
        event["multiValueHeaders"]["Authorization"] = [authorization]
    return websocket.handler(event, Context())


def send(body: str | bytes, connection_id: str = CONNECTION) -> dict[str, Any]:
    event = sample("ws_message")
    event["requestContext"]["connectionId"] = connection_id
    if isinstance(body, bytes):
        event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    else:
        event["body"] = body
    return websocket.handler(event, Context())


@pytest.fixture
def acme(harness: Harness) -> dict[str, str]:
    key = harness.app_with_key("acme")
    return {"key": key, "token": harness.user_token(key, "u1")}


def test_a_user_token_in_the_query_opens_the_users_stream(harness: Harness, acme: dict[str, str]) -> None:
    assert connect({"token": acme["token"]}) == {"statusCode": 200}
    app_id, user_id, key_id = harness.connections.open[CONNECTION]
    assert (app_id, user_id) == ("acme", "u1")
    assert key_id  # the key whose signing secret signed the token: revoking it closes this
    assert harness.poster.posted == []  # API Gateway takes no frame before $connect returns


@pytest.mark.parametrize("user_id", ["me", "u1"])
def test_a_user_token_may_name_its_own_user(harness: Harness, acme: dict[str, str], user_id: str) -> None:
    assert connect({"token": acme["token"], "user_id": user_id})["statusCode"] == 200
    assert harness.connections.open[CONNECTION][:2] == ("acme", "u1")


def test_an_app_key_in_the_header_opens_the_user_it_names(harness: Harness,
                                                           acme: dict[str, str]) -> None:
    r = connect({"user_id": "u7"}, authorization=f"Bearer {acme['key']}")
    assert r == {"statusCode": 200}
    app_id, user_id, key_id = harness.connections.open[CONNECTION]
    assert (app_id, user_id) == ("acme", "u7")
    assert key_id is not None  # revoking that key closes this connection


def _status(answer: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return answer["statusCode"], json.loads(answer.get("body") or "{}")


def test_refusals(harness: Harness, acme: dict[str, str]) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"query": {"token": acme["key"]}}, 401, "never in a URL"),
        ({"query": {}}, 401, "user token"),
        ({"query": None}, 401, "user token"),
        ({"query": {"token": "not-a-token"}}, 401, ""),
        ({"query": {"token": acme["token"], "user_id": "u2"}}, 404, ""),
        ({"query": None, "authorization": f"Bearer {acme['key']}"}, 400, "me"),
        ({"query": None, "authorization": "Basic dTE6cGFzcw=="}, 401, "Bearer"),
        ({"query": {"user_id": "u1"}, "authorization": f"Bearer {ADMIN_KEY}"}, 403, ""),
    ]
    for case, status, words in cases:
        got, doc = _status(connect(**case))
        assert got == status, (case, doc)
        assert doc["status"] == status and words in doc["detail"], (case, doc)
    assert harness.connections.open == {}
    assert "add" not in harness.connections.calls


def test_an_expired_token_is_refused(harness: Harness, acme: dict[str, str]) -> None:
    harness.clock.advance(harness.container.settings.user_token_ttl_seconds + 1)
    status, doc = _status(connect({"token": acme["token"]}))
    assert status == 401 and "expired" in doc["detail"]
    assert harness.connections.open == {}


def test_ping_and_sync(harness: Harness, acme: dict[str, str]) -> None:
    assert connect({"token": acme["token"]})["statusCode"] == 200
    for n in range(2):
        r = harness.http("POST", "/v1/notifications", key=acme["key"],
                         json_body={"to": {"user_id": "u1"}, "title": f"n{n}", "channels": ["in_app"]})
        assert r.status == 202, r.body

    assert send('{"action": "ping"}') == {"statusCode": 200}
    assert send('{"type": "ping"}') == {"statusCode": 200}
    assert send('{"action": "sync"}') == {"statusCode": 200}
    frames = harness.poster.frames(CONNECTION)
    assert frames[:2] == [{"type": "pong"}, {"type": "pong"}]
    assert frames[2] == {"id": "2", "type": "unread_count", "data": {"count": 2, "total": 2}}

    harness.poster.posted.clear()
    send('{"action": "sync", "after": "0"}')  # resume from the start: both events, then counts
    frames = harness.poster.frames(CONNECTION)
    assert [(f["id"], f["type"]) for f in frames] == [
        ("1", "notification.created"), ("2", "notification.created"), ("2", "unread_count")]
    assert frames[0]["data"]["title"] == "n0"

    harness.poster.posted.clear()
    send('{"action": "sync", "after": "9"}')  # from the future: the client must reload
    assert [f["type"] for f in harness.poster.frames(CONNECTION)] == ["stream.reset", "unread_count"]


def test_a_clients_mistakes_get_an_error_frame(harness: Harness, acme: dict[str, str]) -> None:
    assert connect({"token": acme["token"]})["statusCode"] == 200
    big = json.dumps({"action": "ping", "pad": "x" * harness.container.settings.stream_max_frame_bytes})
    for body, status in [("not json", 400), ('{"action": "subscribe"}', 400), ("[1, 2]", 400),
                         (b"\xff\xfe\x00binary", 400), (big, 413),
                         ('{"action": "sync", "after": "x"}', 422), ("null", 400)]:
        harness.poster.posted.clear()
        assert send(body) == {"statusCode": 200}, body
        [frame] = harness.poster.frames(CONNECTION)
        assert frame["type"] == "error" and frame["data"]["status"] == status, (body, frame)
    assert CONNECTION in harness.connections.open  # the socket stays open


def test_sync_on_an_unknown_connection(harness: Harness) -> None:
    assert send('{"action": "sync"}', connection_id="nobody") == {"statusCode": 200}
    [frame] = harness.poster.frames("nobody")
    assert frame["type"] == "error" and frame["data"]["status"] == 404


def test_a_connection_found_gone_is_forgotten(harness: Harness, acme: dict[str, str]) -> None:
    assert connect({"token": acme["token"]})["statusCode"] == 200
    harness.poster.gone.add(CONNECTION)
    assert send('{"action": "ping"}') == {"statusCode": 200}
    assert harness.connections.open == {}


def test_disconnect_forgets_the_connection(harness: Harness, acme: dict[str, str]) -> None:
    assert connect({"token": acme["token"]})["statusCode"] == 200
    assert connect({"token": acme["token"]}, connection_id="other")["statusCode"] == 200
    assert websocket.handler(sample("ws_disconnect"), Context()) == {"statusCode": 200}
    assert set(harness.connections.open) == {"other"}
    # A $disconnect API Gateway sends twice (or for a connection never recorded) is fine.
    assert websocket.handler(sample("ws_disconnect"), Context()) == {"statusCode": 200}


@pytest.mark.parametrize("damage", ["no connection id", "no route", "context not an object",
                                    "query not strings", "body not base64", "not an object"])
def test_a_wrong_event_is_a_400_and_touches_nothing(harness: Harness, acme: dict[str, str],
                                                    damage: str) -> None:
    event: Any = sample("ws_connect")
    event["queryStringParameters"] = {"token": acme["token"]}
    if damage == "no connection id":
        del event["requestContext"]["connectionId"]
    elif damage == "no route":
        del event["requestContext"]["routeKey"]
    elif damage == "context not an object":
        event["requestContext"] = "CONNECT"
    elif damage == "query not strings":
        event["queryStringParameters"] = {"token": [acme["token"]]}
    elif damage == "body not base64":
        event.update(body="%%%", isBase64Encoded=True)
    else:
        event = [event]
    assert websocket.handler(event, Context()) == {"statusCode": 400}
    assert harness.connections.calls == [] and harness.poster.posted == []


def test_frames_go_through_the_management_api(make_harness: Any, aws: MotoServer) -> None:
    """The function's own client of the Management API, on moto under the stage's path: a
    pong is posted as it is; a connection API Gateway says is gone (410) is forgotten."""
    h = make_harness(management_api=True, websocket_endpoint=f"{aws.url}/prod")
    key = h.app_with_key("acme")
    assert connect({"token": h.user_token(key, "u1")})["statusCode"] == 200
    assert send('{"action": "ping"}') == {"statusCode": 200}
    [call] = aws.calls_of("PostToConnection")
    assert call.path == f"/prod/@connections/{CONNECTION}"
    assert json.loads(call.body) == {"type": "pong"}

    aws.fail("PostToConnection", "GoneException", status=410,
             path=f"/prod/@connections/{CONNECTION}")
    assert send('{"action": "ping"}') == {"statusCode": 200}
    assert h.connections.open == {}
