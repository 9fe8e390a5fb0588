"""Fixtures shared by every layer's tests.

Store-backed tests run twice: on SQLite and on the PostgreSQL of TIDINGS_TEST_POSTGRES_URL
(default: the local server's `test` database), each test in its own empty schema. Where that
server cannot be reached the PostgreSQL half is skipped with the reason, except under CI=true,
where it fails: CI has PostgreSQL, so its absence is a broken machine, not a reason to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.fakes.clock import FakeClock
from tests.fakes.providers import ScriptedFactory
from tidings.adapters.providers.options import ProviderOptions
from tidings.adapters.registry import build_provider
from tidings.adapters.store.sql.store import SqlStore
from tidings.bootstrap import Container, build
from tidings.entrypoints.http.app import create_app
from tidings.settings import Settings

POSTGRES_URL = os.environ.get(
    "TIDINGS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
ADMIN_KEY = "tda_test-admin-key-0123456789abcdef"
SECRET_KEY = "test-secret-key-that-is-long-enough-0123456789"
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(url: str) -> bool:
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), timeout=1):
            return True
    except OSError:
        return False


def require_postgres() -> str:
    if _reachable(POSTGRES_URL):
        return POSTGRES_URL
    message = f"PostgreSQL is not reachable at {urlparse(POSTGRES_URL).netloc}"
    if ON_CI:
        pytest.fail(message + " (CI=true: the cluster-mode tests must run)")
    pytest.skip(message + "; set TIDINGS_TEST_POSTGRES_URL to run these tests")


REDIS_URL = os.environ.get("TIDINGS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis() -> str:
    parsed = urlparse(REDIS_URL)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379),
                                      timeout=1):
            return REDIS_URL
    except OSError:
        message = f"Redis is not reachable at {parsed.hostname}:{parsed.port or 6379}"
        if ON_CI:
            pytest.fail(message + " (CI=true: the cluster-mode tests must run)")
        pytest.skip(message + "; set TIDINGS_TEST_REDIS_URL to run these tests")


async def _drop_schema(schema: str) -> None:
    import asyncpg

    parsed = make_url(POSTGRES_URL)
    conn = await asyncpg.connect(host=parsed.host, port=parsed.port or 5432,
                                 user=parsed.username, password=parsed.password,
                                 database=parsed.database)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


AWS_REGION = "eu-west-1"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if backend == "dynamodb":
        async with dynamodb_store(request.getfixturevalue("dynamodb_server")) as s:
            yield s
        return
    async with sql_store(backend, tmp_path) as s:
        yield s


@pytest.fixture(scope="session")
def dynamodb_server() -> Iterator[Any]:
    """moto in server mode on loopback, as DynamoDB (and SQS, SNS, SES …) for the tests."""
    from tests.fakes.moto_server import SerialDynamoDB

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", AWS_REGION)):
        os.environ.setdefault(name, value)
    server = SerialDynamoDB()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Any]:
    """One moto server (SNS, SES, SQS, the Management API …) on loopback; each test that uses
    it resets it."""
    from tests.fakes.moto_server import MotoServer

    server = MotoServer()
    server.start()
    yield server
    server.stop()


@asynccontextmanager
async def dynamodb_store(server: Any, *, stream: bool = False) -> AsyncIterator[Any]:
    """A DynamoDB store on a table of its own (made on migrate), deleted afterwards. Without
    a stream unless asked: moto copies a table's stream records with it on every transaction."""
    from tidings.adapters.store.dynamodb.store import DynamoStore

    table = f"tidings-{uuid.uuid4().hex[:12]}"
    s = DynamoStore(f"dynamodb://{table}?region={AWS_REGION}&endpoint_url={server.url}",
                    stream=stream)
    await s.migrate()
    try:
        yield s
    finally:
        client = await s.table.client()
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            await client.delete_table(TableName=s.table.name)
        await s.close()


@asynccontextmanager
async def sql_store(backend: str, tmp_path: Path) -> AsyncIterator[SqlStore]:
    """A migrated SQLite or PostgreSQL store (in a schema of its own), dropped afterwards."""
    if backend == "sqlite":
        s = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'tidings.db'}")
        await s.migrate()
        yield s
        await s.close()
        return
    url = require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    s = SqlStore(url, schema=schema, pool_size=5)
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()
        await _drop_schema(schema)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def providers() -> ScriptedFactory:
    return ScriptedFactory()


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": "sqlite+aiosqlite:///unused.db", "admin_key": ADMIN_KEY,
        "secret_key": SECRET_KEY, "rate_limit_per_second": 0, "auth_cache_seconds": 0,
        "retry_base_seconds": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def container(store: SqlStore, clock: FakeClock, providers: ScriptedFactory,
                    settings: Settings) -> AsyncIterator[Container]:
    c = build(settings, store=store, clock=clock, provider_factory=providers)
    await c.prepare()
    yield c
    await c.providers.close()
    await c.event_dispatcher.close()


@pytest.fixture
async def client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(container)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as c:
        yield c


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


ADMIN = bearer(ADMIN_KEY)


async def create_app_with_key(client: httpx.AsyncClient, app_id: str = "acme",
                              **app_body: Any) -> dict[str, Any]:
    """Creates an app and mints a key; returns the key document plus auth headers."""
    r = await client.put(f"/v1/apps/{app_id}", json={"name": app_id.title(), **app_body},
                         headers=ADMIN)
    assert r.status_code in (200, 201), r.text
    r = await client.post(f"/v1/apps/{app_id}/keys", headers=ADMIN)
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    doc["headers"] = bearer(doc["key"])
    doc["app_id"] = app_id
    return doc


@pytest.fixture
async def acme(client: httpx.AsyncClient) -> dict[str, Any]:
    return await create_app_with_key(client, "acme")


@pytest.fixture
async def globex(client: httpx.AsyncClient) -> dict[str, Any]:
    return await create_app_with_key(client, "globex")


async def user_token(client: httpx.AsyncClient, app: dict[str, Any], user_id: str) -> dict[str, str]:
    r = await client.post(f"/v1/users/{user_id}/tokens", headers=app["headers"])
    assert r.status_code == 200, r.text
    return bearer(r.json()["token"])


async def drain(container: Container, rounds: int = 20) -> int:
    """Run the worker until nothing is due."""
    total = 0
    for _ in range(rounds):
        handled = await container.dispatcher.run_once()
        total += handled
        if not handled:
            break
        await asyncio.sleep(0)
    return total


@pytest.fixture
def provider_options() -> ProviderOptions:
    """What real providers are built with in tests: short timeouts, loopback allowed. A test
    module overrides this fixture to add its own CA (`ssl_context`)."""
    return ProviderOptions(timeout=3.0, max_concurrency=16, allow_private_webhooks=True,
                           public_url="http://tidings.test")


@pytest.fixture
def real_providers(provider_options: ProviderOptions) -> Any:
    """The production provider factory. A test module that talks to a provider double says
    `providers = real_providers_fixture` (see tests/integration/providers)."""
    return partial(build_provider, options=provider_options)
