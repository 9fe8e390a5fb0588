"""The composition root: builds every adapter and service from settings, and nothing else does."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .adapters.events.webhook_sender import AiohttpWebhookSender
from .adapters.providers.options import ProviderOptions
from .adapters.registry import HUBS, STORES, build_provider, load
from .domain.errors import NotConfigured
from .domain.retry import RetryPolicy
from .ports import Clock, Hub, ProviderFactory, Store, WebhookSender
from .service.apps import Apps
from .service.broadcasting import Broadcasts
from .service.clock import SystemClock
from .service.delivery import Dispatcher
from .service.events import EventDispatcher, Events
from .service.idempotency import Idempotency
from .service.inbox import Inbox
from .service.keys import Credentials
from .service.pairing import Pairing
from .service.preferences import PreferenceSettings
from .service.providers import ProviderPool
from .service.receipts import Receipts
from .service.scheduling import Scheduler
from .service.secrets import SecretBox
from .service.sending import Sender
from .service.stream import Streams
from .service.topics import Topics
from .service.users import Users
from .settings import Settings

log = logging.getLogger("tidings")


@dataclass
class Container:
    settings: Settings
    store: Store
    clock: Clock
    box: SecretBox
    credentials: Credentials
    apps: Apps
    users: Users
    pairing: Pairing
    inbox: Inbox
    idempotency: Idempotency
    sender: Sender
    providers: ProviderPool
    dispatcher: Dispatcher
    events: Events
    receipts: Receipts
    event_dispatcher: EventDispatcher
    streams: Streams
    topics: Topics
    scheduler: Scheduler
    preferences: PreferenceSettings
    broadcasts: Broadcasts

    async def prepare(self) -> str | None:
        """Migrate the schema and make sure an admin key exists; returns a new admin key once."""
        await self.store.migrate()
        admin = self.settings.admin_key.get_secret_value() if self.settings.admin_key else None
        return await self.credentials.ensure_admin(admin)

    async def run_workers(self, stop: asyncio.Event) -> None:
        """The delivery engine (with its housekeeping), the app-event sender, the scheduler and
        the broadcast expansion, until `stop` is set."""
        await asyncio.gather(self.dispatcher.run(stop), self.event_dispatcher.run(stop),
                             self.scheduler.run(stop), self.broadcasts.run(stop))

    async def close(self) -> None:
        await self.streams.hub.close()
        await self.providers.close()
        await self.event_dispatcher.close()
        await self.store.close()


def key_file_for(database_url: str) -> Path | None:
    if not database_url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database + ".key")


def resolve_secret_key(settings: Settings) -> str:
    """TIDINGS_SECRET_KEY, or in the embedded mode a key file kept beside the database."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    path = key_file_for(settings.database_url)
    if path is None:
        raise NotConfigured(
            "TIDINGS_SECRET_KEY is not set. It encrypts provider secrets at rest and every "
            "server must share it: create one with `tidings secret-key` and set "
            "TIDINGS_SECRET_KEY=<that value> in the environment of every tidings process."
        )
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(SecretBox.generate() + "\n")
    log.warning("created the secret key file %s: it encrypts provider secrets in the database; "
                "back it up with the database, or set TIDINGS_SECRET_KEY", path)
    return path.read_text().strip()


def build(settings: Settings | None = None, *, store: Store | None = None,
          clock: Clock | None = None, provider_factory: ProviderFactory | None = None,
          webhook_sender: WebhookSender | None = None, hub: Hub | None = None,
          **_: Any) -> Container:
    settings = settings or Settings()
    if store is None:
        backend = settings.store_backend
        options: dict[str, Any] = {"pool_size": settings.database_pool_size}
        if backend == "postgresql" and settings.database_schema:
            options["schema"] = settings.database_schema
        store = load(STORES, backend, "store")(settings.database_url, **options)
    assert store is not None
    clock = clock or SystemClock()
    box = SecretBox(resolve_secret_key(settings))
    policy = RetryPolicy(max_attempts=settings.retry_max_attempts,
                         base_seconds=settings.retry_base_seconds,
                         cap_seconds=settings.retry_cap_seconds)
    if provider_factory is None:
        provider_options = ProviderOptions(
            max_concurrency=settings.provider_max_requests,
            timeout=settings.provider_timeout_seconds,
            allow_private_webhooks=settings.allow_private_webhooks,
            public_url=settings.public_url)
        provider_factory = partial(build_provider, options=provider_options)
    providers = ProviderPool(store, box, provider_factory,
                             settings.provider_concurrency, settings.provider_default_concurrency,
                             recheck_seconds=settings.auth_cache_seconds)
    apps = Apps(store, clock, box, settings.auth_cache_seconds)
    events = Events(apps, clock)
    if hub is None:
        if settings.websocket_endpoint:  # AWS: API Gateway holds the WebSocket connections
            # The registry of connections is in the store's table: the store's client reads it.
            table = getattr(store, "table", None)
            hub = load(HUBS, "apigateway", "hub").from_urls(
                settings.websocket_endpoint, settings.database_url,
                borrow_dynamodb=getattr(table, "client", None))
        elif settings.redis_url:
            hub = load(HUBS, "redis", "hub")(settings.redis_url, settings.redis_channel_prefix)
        else:
            hub = load(HUBS, "memory", "hub")()
    assert hub is not None
    streams = Streams(store, hub, clock, retention_seconds=settings.stream_retention_seconds)
    dispatcher = Dispatcher(store, clock, providers, policy,
                            batch_size=settings.worker_batch_size,
                            lease_seconds=settings.worker_lease_seconds,
                            poll_interval=settings.worker_poll_interval, events=events,
                            lanes=settings.worker_lanes,
                            housekeeping=(*_store_chores(store), streams.purge))
    event_dispatcher = EventDispatcher(
        store, clock, apps, box, webhook_sender or AiohttpWebhookSender(ProviderOptions(
            timeout=settings.provider_timeout_seconds,
            allow_private_webhooks=settings.allow_private_webhooks)))
    idempotency = Idempotency(store, clock, box)
    return Container(
        settings=settings, store=store, clock=clock, box=box,
        credentials=Credentials(store, clock, box, settings.auth_cache_seconds),
        apps=apps, users=Users(store, clock), events=events,
        receipts=Receipts(store, events), event_dispatcher=event_dispatcher,
        pairing=Pairing(store, clock),
        inbox=Inbox(store, clock, events, streams), idempotency=idempotency,
        sender=Sender(store, clock, idempotency, on_queued=dispatcher.wake, streams=streams,
                      max_batch=getattr(store, "group_commit_limit", 256)),
        streams=streams, topics=Topics(store, clock),
        preferences=PreferenceSettings(store, clock, apps),
        scheduler=Scheduler(store, clock, apps, streams=streams, on_queued=dispatcher.wake),
        broadcasts=Broadcasts(store, clock, apps, idempotency, streams=streams,
                              on_queued=dispatcher.wake,
                              batch_size=settings.broadcast_batch_size,
                              poll_interval=settings.worker_poll_interval),
        providers=providers, dispatcher=dispatcher,
    )


def _store_chores(store: Store) -> tuple[Callable[[], Awaitable[object]], ...]:
    """A store's own housekeeping: DynamoDB finishes the large units of work whose writer
    died midway (its `recover`); a store whose transactions are atomic has none."""
    recover = getattr(store, "recover", None)
    return (recover,) if recover is not None else ()
