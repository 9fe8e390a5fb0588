"""What one Lambda process keeps between invocations: one event loop, one Container, the AWS
clients, and the seam through which tests hand in their own.

Lambda runs one invocation at a time per process and freezes the process in between, so
whatever the first invocation builds (the container and its store client, the SQS client, the
Management API client) is reused by the next ones, on the same event loop: an aiobotocore or
aiohttp client belongs to the loop it was opened on, which is why the loop is made once here
and never closed, instead of `asyncio.run()` per invocation.

Nothing happens at import: the settings (the environment) are read and the container is built
at the first invocation that needs them; a function that needs no container (the outbox) never
builds one.

The secret key and the admin key are not in the environment on AWS (anyone allowed
`lambda:GetFunctionConfiguration` could read them there): the template sets the ARNs of their
Secrets Manager secrets (TIDINGS_SECRET_KEY_ARN, TIDINGS_ADMIN_KEY_ARN), and the container's
first build reads them, once per process. A key set in the environment itself wins over its ARN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import AsyncExitStack
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import logs

if TYPE_CHECKING:
    from ...bootstrap import Container
    from ...domain.delivery import Claim
    from ...ports import Clock
    from ...settings import Settings

T = TypeVar("T")
log = logging.getLogger("tidings.lambda")


class Poster(Protocol):
    async def post(self, connection_id: str, data: bytes) -> bool:
        """Send one text frame; False when the connection is gone."""
        ...


class ConnectionBook(Protocol):
    """Which user each open WebSocket connection belongs to."""

    async def add(self, app_id: str, user_id: str, connection_id: str, at: datetime, *,
                  key_id: str | None = None) -> None:
        """`key_id`: the key the connection was authenticated with (revoking it closes it)."""
        ...
    async def remove(self, connection_id: str) -> tuple[str, str] | None:
        """The (app id, user id) the connection belonged to; None when unknown."""
        ...
    async def get(self, connection_id: str) -> tuple[str, str] | None: ...


DeliveryKey = tuple[str, str, str]  # (app id, notification id, delivery id)


class ClaimSource(Protocol):
    async def __call__(self, ids: Sequence[DeliveryKey], now: datetime, lease_seconds: float,
                       lease_id: str) -> tuple[list[Claim], dict[str, datetime]]:
        """Claim, under a lease, those of the deliveries that are due. Returns the claims, and
        for each delivery that is still pending but may not be sent yet (held by quiet hours,
        backing off, or leased by another worker) the time from which it may be; a delivery
        that is in neither is done or gone."""
        ...


class Runtime:
    """Every argument replaces what the runtime would otherwise build from the settings."""

    def __init__(self, *, settings: Settings | None = None, container: Container | None = None,
                 clock: Clock | None = None, sqs: Any = None, poster: Poster | None = None,
                 connections: ConnectionBook | None = None, claims: ClaimSource | None = None,
                 json_logs: bool = True) -> None:
        self._settings = settings or (container.settings if container is not None else None)
        self._container = container
        self._clock = clock
        self._prepared = False
        self._sqs = sqs
        self._poster = poster
        self._connections = connections
        self._claims = claims
        self._logs_pending = json_logs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stack = AsyncExitStack()
        self._owns_container = container is None
        self.cache: dict[str, Any] = {}  # what a function builds once per process

    # -- the loop and the invocation ------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` to its end on the process's loop (which stays current for code, such as
        Mangum, that looks it up)."""
        loop = self.loop
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(work)

    @contextlib.contextmanager
    def invocation(self, function: str, context: Any) -> Iterator[None]:
        if self._logs_pending:
            self._logs_pending = False
            logs.install(self.settings.log_level.upper())
        with logs.tagged(function, getattr(context, "aws_request_id", None)):
            yield

    # -- what the functions use -----------------------------------------------------------
    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from ...settings import Settings

            self._settings = Settings()
        return self._settings

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            if self._container is not None:
                self._clock = self._container.clock
            else:
                from ...service.clock import SystemClock

                self._clock = SystemClock()
        return self._clock

    async def container(self, *, prepare: bool = False) -> Container:
        """The process's container; with `prepare`, its store checked (on DynamoDB: the
        table exists) and the admin key in place, once."""
        if self._container is None:
            from ...bootstrap import build

            await self._read_secrets()
            self._container = build(self.settings, clock=self._clock)
            log.info("built the container (store %s)", self.settings.store_backend)
        if prepare and not self._prepared:
            await self._container.prepare()
            self._prepared = True
        return self._container

    async def _read_secrets(self) -> None:
        """The keys the settings name by their Secrets Manager ARN only, read into the
        settings. The endpoint is the DynamoDB URL's `endpoint_url` option when it has one: a
        local double of AWS (moto serves every service on one port); on AWS, each service's
        own endpoint in the ARN's region."""
        settings = self.settings
        wanted: dict[str, tuple[str, str]] = {}  # setting -> (ARN, prefix of the value)
        if settings.secret_key is None and settings.secret_key_arn:
            wanted["secret_key"] = (settings.secret_key_arn, "")
        if settings.admin_key is None and settings.admin_key_arn:
            # The template generates the secret's string; the operator's key is "tda_" + it.
            wanted["admin_key"] = (settings.admin_key_arn, "tda_")
        if not wanted:
            return
        from pydantic import SecretStr

        from ...adapters.secrets.secretsmanager import read_secret

        endpoint = _aws_endpoint(settings)
        values = await asyncio.gather(*(read_secret(arn, endpoint_url=endpoint)
                                        for arn, _ in wanted.values()))
        self._settings = settings.model_copy(update={
            name: SecretStr(prefix + value)
            for (name, (_, prefix)), value in zip(wanted.items(), values, strict=True)})
        log.info("read %s from Secrets Manager", " and ".join(sorted(wanted)))

    async def sqs(self) -> Any:
        if self._sqs is None:
            from .clients import open_client, queue_location

            region, endpoint = queue_location(self.queue_url())
            self._sqs = await open_client(self._stack, "sqs", region=region, endpoint_url=endpoint)
        return self._sqs

    def queue_url(self) -> str:
        if not self.settings.queue_url:
            from ...domain.errors import NotConfigured

            raise NotConfigured("TIDINGS_QUEUE_URL is not set: the SQS queue of deliveries")
        return self.settings.queue_url

    async def poster(self) -> Poster:
        if self._poster is None:
            from ...domain.errors import NotConfigured
            from .clients import ManagementApi, management_location, open_client

            if not self.settings.websocket_endpoint:
                raise NotConfigured("TIDINGS_WEBSOCKET_ENDPOINT is not set: the Management API "
                                    "endpoint of the WebSocket API's stage")
            region, endpoint = management_location(self.settings.websocket_endpoint)
            self._poster = ManagementApi(await open_client(
                self._stack, "apigatewaymanagementapi", region=region, endpoint_url=endpoint))
        return self._poster

    async def connections(self) -> ConnectionBook:
        """The WebSocket connections: those the API Gateway hub fans events out to."""
        if self._connections is None:
            container = await self.container()
            book = getattr(container.streams.hub, "connections", None)
            if book is None:
                from ...domain.errors import NotConfigured

                raise NotConfigured("WebSocket connections need the API Gateway hub: set "
                                    "TIDINGS_WEBSOCKET_ENDPOINT and the DynamoDB store")
            self._connections = book
        return self._connections

    async def claims(self) -> ClaimSource:
        if self._claims is None:
            self._claims = _store_claims(await self.container())
        return self._claims

    # -- for tests ------------------------------------------------------------------------
    def close(self) -> None:
        """Close the clients and what the runtime built, then the loop (a Lambda process
        never does: it is frozen, then dropped)."""
        async def _close() -> None:
            await self._stack.aclose()
            if self._container is not None and self._owns_container:
                await self._container.close()

        if self._loop is not None and not self._loop.is_closed():
            self.run(_close())
            self._loop.close()


def _aws_endpoint(settings: Settings) -> str | None:
    """The `endpoint_url` option of a DynamoDB database URL (a local double of AWS), if any."""
    if settings.store_backend != "dynamodb":
        return None
    from ...adapters.store.dynamodb.table import parse_url

    return parse_url(settings.database_url).endpoint_url


def _store_claims(container: Container) -> ClaimSource:
    async def claim(ids: Sequence[DeliveryKey], now: datetime, lease_seconds: float,
                    lease_id: str) -> tuple[list[Claim], dict[str, datetime]]:
        async with container.store.transaction() as tx:
            by_ids = getattr(tx.deliveries, "claim_ids", None)
            if by_ids is None:
                from ...domain.errors import NotConfigured

                raise NotConfigured("this store cannot claim deliveries by id; the queue "
                                    "worker needs the DynamoDB store")
            claims, not_due = await by_ids(ids, now, lease_seconds, lease_id)
            return list(claims), dict(not_due)

    return claim


_current: Runtime | None = None


def current() -> Runtime:
    """The process's runtime, made at the first invocation."""
    global _current
    if _current is None:
        _current = Runtime()
    return _current


def install(runtime: Runtime | None) -> Runtime | None:
    """Use `runtime` from now on (None: make a new one at the next invocation); returns the
    one it replaces. Tests install a runtime holding their container and doubles."""
    global _current
    previous, _current = _current, runtime
    return previous
