"""The FastAPI application: routes, error mapping, middleware, and the in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import WebSocketRoute

from ... import __version__
from . import errors
from .auth import RateLimiter
from .middleware import Metrics, RequestGuard
from .routes import (
    apps,
    broadcasts,
    callbacks,
    inbox,
    notifications,
    ops,
    preferences,
    topics,
    users,
)

if TYPE_CHECKING:
    from ...bootstrap import Container
    from ..stream.registry import StreamRegistry


def create_app(container: Container, *, run_worker: bool = False,
               close_container: bool = False, streams: bool = True) -> FastAPI:
    """`streams=False` leaves out the WebSocket and event-stream routes and what keeps them
    (the stream registry and its task, the hub's start): where requests are served one at a
    time by functions (API Gateway HTTP APIs and Lambda), no response can stay open, and the
    streams go through the platform's own WebSocket API instead. Their modules are then not
    even imported."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        watcher = None
        if registry is not None:
            await container.streams.hub.start(registry.kick)
            watcher = asyncio.create_task(registry.run(stop), name="tidings-streams")
        worker = (asyncio.create_task(container.run_workers(stop), name="tidings-worker")
                  if run_worker else None)
        try:
            yield
        finally:
            if registry is not None:
                registry.shutdown()
            stop.set()
            if watcher is not None:
                await watcher
            if worker is not None:
                await worker
            await app.state.sns.close()
            if close_container:
                await container.close()

    app = FastAPI(title="Tidings", version=__version__, lifespan=lifespan,
                  description="One notification service for every app: devices, push, SMS, "
                  "e-mail and an in-app inbox per user.")
    app.state.container = container
    settings = container.settings
    registry: StreamRegistry | None = None
    if streams:
        from ..stream import sse, ws
        from ..stream.registry import StreamRegistry

        registry = StreamRegistry(container.credentials, container.clock,
                                  heartbeat=settings.stream_heartbeat_seconds,
                                  recheck=settings.stream_recheck_seconds)
        app.state.streams = registry
    app.state.sns = callbacks.SnsEndpoint()
    app.state.rate_limiter = RateLimiter(container.settings.rate_limit_per_second,
                                         container.settings.rate_limit_burst)
    metrics = CollectorRegistry()
    app.state.metrics_registry = metrics
    if registry is not None:
        live = registry
        Gauge("tidings_stream_connections", "Open streams (WebSocket and event stream)",
              registry=metrics).set_function(lambda: len(live.listeners))
    errors.install(app)
    # The hottest paths first: routes are matched in order.
    for module in (notifications, inbox, preferences, users, broadcasts, topics, apps,
                   callbacks, ops):
        app.include_router(module.router)
    if registry is not None:
        app.include_router(sse.router)
        app.router.routes.append(WebSocketRoute("/v1/users/{user_id}/stream", ws.stream))
    app.add_middleware(RequestGuard, max_bytes=container.settings.max_body_bytes)
    app.add_middleware(Metrics, registry=metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key",
                                          "Last-Event-ID"], max_age=600)
    return app
