"""One aiobotocore client made at its first use, for the AWS adapters that hold one for their
lifetime: the DynamoDB store's table, the API Gateway hub's registry and Management API, and
(through a subclass that makes it with an app's own keys and TLS settings) the SNS and SES
providers.

Concurrent first calls share one client. It is closed with its owner, unless it was given:
an injected client (a test's), or `borrow`, an owner's way to use another's (the hub reads
the table the store already has a client for), stays its maker's to close. Credentials come
from the default chain (the function's role on Lambda). aiobotocore is imported on first use,
so a process that never talks to AWS never loads it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from ..domain.errors import NotConfigured

# botocore's loader of service models, shared by every session this process makes: reading and
# parsing a service's JSON model costs far more than building a client from it.
_LOADERS: list[Any] = []


def new_session() -> Any:
    """An aiobotocore session (its own credentials) that shares the process's model loader."""
    from aiobotocore.session import AioSession

    session = AioSession()
    if _LOADERS:
        session.register_component("data_loader", _LOADERS[0])
    else:
        _LOADERS.append(session.get_component("data_loader"))
    return session


class LazyClient:
    def __init__(self, service: str, region: str | None, endpoint_url: str | None = None, *,
                 client: Any = None, borrow: Callable[[], Awaitable[Any]] | None = None,
                 pool: int = 64, connect_timeout: float = 10.0, read_timeout: float = 10.0,
                 retries: dict[str, Any] | None = None) -> None:
        self._service = service
        self._region = region
        self._endpoint_url = endpoint_url
        self._borrow = borrow
        self._options: dict[str, Any] = {
            "max_pool_connections": pool, "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "retries": retries or {"mode": "standard", "total_max_attempts": 3}}
        self._client = client
        self._stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                self._client = await (self._borrow() if self._borrow is not None
                                      else self._create())
        return self._client

    async def _create(self) -> Any:
        try:
            from aiobotocore.config import AioConfig
        except ImportError as exc:
            raise NotConfigured(f"talking to AWS {self._service} needs aiobotocore: "
                                "pip install 'tidings[aws]'") from exc
        stack = AsyncExitStack()
        client = await stack.enter_async_context(new_session().create_client(
            self._service, region_name=self._region, endpoint_url=self._endpoint_url,
            config=AioConfig(**self._options)))
        self._stack = stack
        return client

    async def close(self) -> None:
        async with self._lock:
            stack, self._stack = self._stack, None
            if stack is not None:
                self._client = None
        if stack is not None:
            await stack.aclose()
