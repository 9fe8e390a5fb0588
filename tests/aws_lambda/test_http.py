"""The HTTP API function: API Gateway's payload format 2.0 through Mangum to the FastAPI app."""

from __future__ import annotations

import json

import pytest
from starlette.routing import WebSocketRoute

from tests.aws_lambda.conftest import Context, Harness, sample
from tests.conftest import ADMIN_KEY
from tidings.domain.delivery import Sent
from tidings.entrypoints.aws_lambda import http
from tidings.entrypoints.http.app import create_app


def test_an_app_sends_and_the_user_reads_the_inbox(harness: Harness) -> None:
    key = harness.app_with_key("acme")

    device = sample("http_post_base64")  # a client that sends its body base64-encoded
    device["headers"]["authorization"] = f"Bearer {key}"
    r = harness.call_http(device)
    assert r.status == 201, r.body
    assert r.body["platform"] == "android"
    assert r.raw["isBase64Encoded"] is False
    assert r.headers["content-type"] == "application/json"

    send = sample("http_post")
    send["headers"]["authorization"] = f"Bearer {key}"
    r = harness.call_http(send)
    assert r.status == 202, r.body
    [sent] = r.body["items"]
    notification_id = sent["id"]
    assert {d["channel"]: d["status"] for d in sent["deliveries"]} == {"push": "pending",
                                                                        "in_app": "sent"}
    again = harness.call_http(send)  # the same Idempotency-Key header: the same notification
    assert again.status == 202 and again.body["items"][0]["id"] == notification_id

    assert harness.run(harness.container.dispatcher.run_once()) == 1
    [message] = harness.providers.get("log").sent
    assert (message.target, message.title) == ("fcm-token-0123456789", "Hello")

    inbox = sample("http_get")
    inbox["headers"]["authorization"] = f"Bearer {key}"
    inbox["rawQueryString"], inbox["queryStringParameters"] = "limit=10", {"limit": "10"}
    r = harness.call_http(inbox)
    assert r.status == 200, r.body
    assert r.body["unread_count"] == 1
    [item] = r.body["items"]
    assert item["id"] == notification_id
    assert item["status"] == "sent"

    token = harness.user_token(key, "u1")
    r = harness.http("POST", f"/v1/users/me/notifications/{notification_id}/read", key=token)
    assert r.status == 200, r.body
    r = harness.http("GET", "/v1/users/me/notifications", key=token, query="unread=true")
    assert r.status == 200 and r.body["items"] == [] and r.body["unread_count"] == 0


def test_query_strings_reach_the_app(harness: Harness) -> None:
    key = harness.app_with_key()
    for n in range(3):
        r = harness.http("POST", "/v1/notifications", key=key,
                         json_body={"to": {"user_id": "u1"}, "title": f"n{n}", "channels": ["in_app"]})
        assert r.status == 202, r.body
    r = harness.http("GET", "/v1/users/u1/notifications", key=key, query="limit=2&channel=in_app")
    assert r.status == 200, r.body
    assert [i["title"] for i in r.body["items"]] == ["n2", "n1"]
    cursor = r.body["next_cursor"]
    assert cursor
    r = harness.http("GET", "/v1/users/u1/notifications", key=key,
                     query=f"limit=2&channel=in_app&cursor={cursor}")
    assert [i["title"] for i in r.body["items"]] == ["n0"]


def test_problem_documents_come_back_as_text(harness: Harness) -> None:
    r = harness.http("GET", "/v1/apps")
    assert r.status == 401
    assert r.raw["isBase64Encoded"] is False  # not base64: a client reads it as it is
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.body["status"] == 401 and r.body["type"] == "urn:tidings:problem:unauthenticated"

    key = harness.app_with_key()
    r = harness.http("POST", "/v1/notifications", key=key, json_body={"to": {}, "title": 5})
    assert r.status == 422, r.body
    assert r.body["errors"]
    r = harness.http("GET", "/v1/nowhere", key=key)
    assert r.status == 404 and r.headers["content-type"] == "application/problem+json"


def test_the_streams_are_not_served_here(harness: Harness) -> None:
    key = harness.app_with_key()
    token = harness.user_token(key, "u1")
    for path in ("/v1/users/me/events", "/v1/users/me/stream"):
        r = harness.http("GET", path, key=token)
        assert r.status == 404, (path, r.body)
    lean, full = create_app(harness.container, streams=False), create_app(harness.container)
    assert "/v1/notifications" in lean.openapi()["paths"]
    assert "/v1/users/{user_id}/events" not in lean.openapi()["paths"]
    assert "/v1/users/{user_id}/events" in full.openapi()["paths"]
    assert not any(isinstance(r, WebSocketRoute) for r in lean.router.routes)
    assert any(isinstance(r, WebSocketRoute) for r in full.router.routes)
    assert not hasattr(lean.state, "streams") and hasattr(full.state, "streams")


def _wrong_shapes() -> list[tuple[str, object]]:
    put = sample("http_post")
    put["rawPath"] = put["requestContext"]["http"]["path"] = "/v1/apps/wrong"
    put["requestContext"]["http"]["method"] = "PUT"
    put["headers"]["authorization"] = f"Bearer {ADMIN_KEY}"
    put["body"] = json.dumps({"name": "Wrong"})
    put["headers"]["content-length"] = str(len(put["body"]))
    v1 = dict(put, version="1.0", httpMethod="PUT", path="/v1/apps/wrong")
    no_http = json.loads(json.dumps(put))
    del no_http["requestContext"]["http"]
    bad_base64 = dict(put, body="not base64 at all!", isBase64Encoded=True)
    bad_headers = dict(put, headers={"authorization": ["Bearer", ADMIN_KEY]})
    relative = dict(put, rawPath="v1/apps/wrong")
    return [("payload format 1.0", v1), ("no requestContext.http", no_http),
            ("body not base64", bad_base64), ("headers not strings", bad_headers),
            ("path not absolute", relative), ("not an object", ["GET", "/v1/apps"]),
            ("empty", {})]


@pytest.mark.parametrize(("case", "event"), _wrong_shapes(), ids=[c for c, _ in _wrong_shapes()])
def test_a_wrong_event_is_a_400_and_writes_nothing(harness: Harness, case: str, event: object,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="tidings.lambda")
    answer = http.handler(event, Context())  # type: ignore[arg-type]
    assert answer["statusCode"] == 400, case
    assert answer["headers"]["content-type"] == "application/problem+json"
    doc = json.loads(answer["body"])
    assert doc["status"] == 400 and "HTTP API" in doc["detail"]
    assert ADMIN_KEY not in caplog.text  # the event's shape is logged, never its values
    [record] = [r for r in caplog.records if r.name == "tidings.lambda"]
    assert "event_shape" in record.fields  # type: ignore[attr-defined]
    assert ADMIN_KEY not in json.dumps(record.fields)  # type: ignore[attr-defined]
    r = harness.http("GET", "/v1/apps/wrong", key=ADMIN_KEY)
    assert r.status == 404, r.body


def test_a_base64_body_is_decoded(harness: Harness) -> None:
    r = harness.http("PUT", "/v1/apps/encoded", key=ADMIN_KEY, json_body={"name": "Encoded"},
                     encode=True)
    assert r.status == 201, r.body
    assert r.body["name"] == "Encoded"
    raw = harness.http("GET", "/v1/apps/encoded", key=ADMIN_KEY).raw
    assert json.loads(raw["body"])["id"] == "encoded"


def test_sent_providers_see_the_message(harness: Harness) -> None:
    """A send accepted by the function reaches a provider through the engine unchanged."""
    key = harness.app_with_key()
    harness.providers.get("log").script = lambda m: Sent(f"log-{m.delivery_id}")
    r = harness.http("POST", "/v1/users/u9/devices", key=key,
                     json_body={"platform": "android", "token": "tok-9"})
    assert r.status == 201, r.body
    r = harness.http("POST", "/v1/notifications", key=key,
                     json_body={"to": {"user_id": "u9"}, "title": "Ünïcode ✓", "data": {"k": "v"}})
    assert r.status == 202, r.body
    assert harness.run(harness.container.dispatcher.run_once()) == 1
    [message] = harness.providers.get("log").sent
    assert message.title == "Ünïcode ✓" and message.data == {"k": "v"}
    r = harness.http("GET", f"/v1/notifications/{r.body['items'][0]['id']}", key=key)
    assert r.body["deliveries"][0]["provider_message_id"].startswith("log-")


def test_the_raw_path_reaches_the_guards(harness: Harness) -> None:
    """Mangum leaves the scope's raw path empty; the function fills it from `rawPath`, so that
    the app still refuses an encoded NUL."""
    event = sample("http_get")
    event["headers"]["authorization"] = f"Bearer {ADMIN_KEY}"
    event["rawPath"] = "/v1/apps/a%00b"
    event["requestContext"]["http"]["path"] = "/v1/apps/a\x00b"
    r = harness.call_http(event)
    assert r.status == 400, r.body
    assert "NUL" in r.body["detail"]
