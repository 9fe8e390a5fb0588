"""What a function's process keeps, what it logs, and what importing a handler costs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.aws_lambda.conftest import EVENTS, sample
from tests.conftest import SECRET_KEY, make_settings
from tidings.entrypoints.aws_lambda import events, runtime
from tidings.entrypoints.aws_lambda.clients import management_location, queue_location
from tidings.entrypoints.aws_lambda.runtime import Runtime

HANDLERS = ["http", "websocket", "outbox", "worker", "scheduler"]


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env=env, check=False)


def test_one_loop_and_one_container_per_process(tmp_path: Path) -> None:
    settings = make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'one.db'}")
    rt = Runtime(settings=settings, json_logs=False)
    try:
        loop = rt.loop
        first = rt.run(rt.container(prepare=True))
        second = rt.run(rt.container(prepare=True))
        assert first is second and rt.loop is loop and not loop.is_closed()
        assert rt.clock is first.clock
        # The loop stays the current one between invocations (Mangum looks it up).
        assert asyncio.get_event_loop() is loop
    finally:
        rt.close()
    assert loop.is_closed()


def test_the_runtime_is_made_once_and_can_be_replaced() -> None:
    previous = runtime.install(None)
    try:
        made = runtime.current()
        assert runtime.current() is made
        mine = Runtime(json_logs=False)
        assert runtime.install(mine) is made
        assert runtime.current() is mine
    finally:
        runtime.install(previous)


def test_where_the_aws_clients_point() -> None:
    assert queue_location("https://sqs.eu-west-1.amazonaws.com/123456789012/q") == ("eu-west-1", None)
    assert queue_location("https://eu-west-1.queue.amazonaws.com/123456789012/q") == ("eu-west-1", None)
    assert queue_location("http://127.0.0.1:5000/123456789012/q") == (None, "http://127.0.0.1:5000")
    assert management_location("https://abc123.execute-api.eu-central-1.amazonaws.com/prod/") == (
        "eu-central-1", "https://abc123.execute-api.eu-central-1.amazonaws.com/prod")
    assert management_location("http://127.0.0.1:5000/prod") == (None, "http://127.0.0.1:5000/prod")


def test_an_events_shape_says_nothing_of_its_values() -> None:
    event = sample("ws_connect")
    text = json.dumps(events.shape(event))
    token = event["queryStringParameters"]["token"]
    assert token not in text and "w5ock3t1d" not in text
    assert events.shape(event)["queryStringParameters"] == {"token": f"string[{len(token)}]"}
    assert events.shape({"Records": [{"a": 1}] * 3}) == {"Records": [{"a": "int"}, "3 items"]}
    assert events.shape(list(range(100)), depth=9) == "array[100]"


def test_every_sample_event_is_accepted_by_its_check() -> None:
    events.http_request(sample("http_get"))
    events.http_request(sample("http_post"))
    events.http_request(sample("http_post_base64"))
    assert events.websocket(sample("ws_connect")).query["token"]
    assert events.websocket(sample("ws_connect")).headers["sec-websocket-version"] == "13"
    assert events.websocket(sample("ws_disconnect")).route == "$disconnect"
    assert events.websocket(sample("ws_message")).body == '{"action": "ping"}'
    assert [m.receive_count for m in events.sqs(sample("sqs_batch"))] == [1, 3, 1]
    assert [r.name for r in events.dynamodb_stream(sample("dynamodb_stream"))] == [
        "INSERT", "MODIFY", "REMOVE"]
    assert events.scheduled(sample("scheduled")).time == "2025-02-04T09:36:00Z"
    for check, name in [(events.sqs, "dynamodb_stream"), (events.dynamodb_stream, "sqs_batch"),
                        (events.scheduled, "http_get"), (events.websocket, "scheduled"),
                        (events.http_request, "ws_message")]:
        with pytest.raises(events.BadEvent):
            check(sample(name))


def test_logs_are_json_lines_with_the_request_id(tmp_path: Path) -> None:
    """A real process, as on Lambda: the settings from the environment, the logs on stdout."""
    env = {"PATH": "/usr/bin:/bin", "TIDINGS_SECRET_KEY": SECRET_KEY,
           "TIDINGS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"}
    done = _python(f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from tests.aws_lambda.conftest import Context
        from tidings.entrypoints.aws_lambda import http
        event = json.load(open({str(EVENTS / 'http_get.json')!r}))
        event["version"] = "1.0"
        event["headers"]["authorization"] = "Bearer tds_this-must-never-be-logged"
        context = Context()
        context.aws_request_id = "req-1234"
        answer = http.handler(event, context)
        print(json.dumps({{"answer": answer["statusCode"]}}))
    """, env=env)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    [log] = [doc for doc in lines if "level" in doc]
    assert (log["level"], log["request_id"], log["function"]) == ("ERROR", "req-1234", "http")
    assert "payload format 1.0" in log["message"]
    assert log["event_shape"]["headers"]["authorization"].startswith("string[")
    assert "never-be-logged" not in done.stdout + done.stderr
    assert lines[-1] == {"answer": 400}


def test_importing_a_handler_loads_no_framework_and_no_sdk() -> None:
    done = _python(f"""
        import importlib, json, sys
        out = {{}}
        for name in {HANDLERS!r}:
            importlib.import_module("tidings.entrypoints.aws_lambda." + name)
            out[name] = sorted(m for m in ("fastapi", "sqlalchemy", "aiobotocore", "botocore",
                                           "uvicorn", "pydantic_settings", "tidings.bootstrap",
                                           "tidings.entrypoints.stream") if m in sys.modules)
        print(json.dumps(out))
    """)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {name: [] for name in HANDLERS}


def test_the_api_without_streams_does_not_load_them(tmp_path: Path) -> None:
    done = _python(f"""
        import json, sys
        from tidings.bootstrap import build
        from tidings.entrypoints.http.app import create_app
        from tidings.settings import Settings
        container = build(Settings(database_url="sqlite+aiosqlite:///{tmp_path / 'y.db'}",
                                   secret_key={SECRET_KEY!r}))
        create_app(container, streams=False)
        lean = [m for m in ("tidings.entrypoints.stream", "uvicorn", "websockets") if m in sys.modules]
        create_app(container)
        full = [m for m in ("tidings.entrypoints.stream", "uvicorn", "websockets") if m in sys.modules]
        print(json.dumps([lean, full]))
    """)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[], ["tidings.entrypoints.stream", "uvicorn", "websockets"]]

