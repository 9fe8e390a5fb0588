"""The FastAPI application: routes, error mapping, middleware, and the in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from ... import __version__
from ...bootstrap import Container
from . import errors
from .auth import RateLimiter
from .middleware import Metrics, RequestGuard
from .routes import apps, callbacks, inbox, notifications, ops, users


def create_app(container: Container, *, run_worker: bool = False,
               close_container: bool = False) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        worker = (asyncio.create_task(container.run_workers(stop), name="tidings-worker")
                  if run_worker else None)
        try:
            yield
        finally:
            stop.set()
            if worker is not None:
                await worker
            await app.state.sns.close()
            if close_container:
                await container.close()

    app = FastAPI(title="Tidings", version=__version__, lifespan=lifespan,
                  description="One notification service for every app: devices, push, SMS, "
                  "e-mail and an in-app inbox per user.")
    app.state.container = container
    app.state.sns = callbacks.SnsEndpoint()
    app.state.rate_limiter = RateLimiter(container.settings.rate_limit_per_second,
                                         container.settings.rate_limit_burst)
    registry = CollectorRegistry()
    app.state.metrics_registry = registry
    errors.install(app)
    # The hottest paths first: routes are matched in order.
    for module in (notifications, inbox, users, apps, callbacks, ops):
        app.include_router(module.router)
    app.add_middleware(RequestGuard, max_bytes=container.settings.max_body_bytes)
    app.add_middleware(Metrics, registry=registry)
    return app
