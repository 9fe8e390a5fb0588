"""Shared by the HTTP providers: one pooled keep-alive aiohttp session per credential, opened at
first use; the reading of Retry-After; the mapping of transport failures; bounded concurrency."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import aiohttp

from ...domain.delivery import Retry, SendResult
from .options import ProviderOptions
from .ssrf import resolver_for

T = TypeVar("T")


def client_ssl(options: ProviderOptions) -> ssl.SSLContext:
    return options.ssl_context or ssl.create_default_context()


def session(options: ProviderOptions, *, limit: int | None = None,
            resolver: aiohttp.abc.AbstractResolver | None = None) -> aiohttp.ClientSession:
    """A keep-alive pool sized to the provider's concurrency; nothing reads the environment's
    proxies or cookies."""
    connector = aiohttp.TCPConnector(
        limit=limit or options.max_concurrency, ssl=client_ssl(options), ttl_dns_cache=300,
        enable_cleanup_closed=True, resolver=resolver)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=options.timeout),
        headers={"User-Agent": options.user_agent}, cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False, auto_decompress=True)


class LazySession:
    """A provider instance's one `session`, made at the first `get()` (a provider's constructor
    stays cheap) and again after `close()`. `public_only` is for URLs that apps or users chose:
    unless the operator allows private targets, their names resolve to public addresses only."""

    def __init__(self, options: ProviderOptions, *, public_only: bool = False) -> None:
        self._options = options
        self._public_only = public_only
        self._session: aiohttp.ClientSession | None = None
        self._resolver: aiohttp.abc.AbstractResolver | None = None

    def get(self) -> aiohttp.ClientSession:
        client = self._session
        if client is None or client.closed:
            if self._public_only:
                # The connector does not close a resolver it was given: close() does.
                self._resolver = resolver_for(self._options.allow_private_webhooks)
            client = self._session = session(self._options, resolver=self._resolver)
        return client

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date; None when the
    header is absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), 86_400))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, min((when - (now or datetime.now(UTC))).total_seconds(), 86_400.0))


TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, OSError,
                    ValueError)


def transport_retry(exc: BaseException) -> Retry:
    """A request that did not get a readable answer: the provider may or may not have it."""
    kind = type(exc).__name__
    detail = str(exc).strip()
    return Retry(f"{kind}: {detail}"[:300] if detail else kind)


async def gather_bounded(items: Sequence[T], limit: int,
                         one: Callable[[T], Awaitable[SendResult]]) -> list[SendResult]:
    """Send every item with at most `limit` in flight; results in the items' order. An
    exception escaping `one` becomes a Retry for that item alone."""
    results: list[SendResult] = [Retry("not sent")] * len(items)
    if not items:
        return results
    queue = iter(enumerate(items))

    async def lane() -> None:
        for index, item in queue:
            try:
                results[index] = await one(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- garbage from a provider must not stop the batch
                results[index] = transport_retry(exc)

    await asyncio.gather(*(lane() for _ in range(min(limit, len(items)))))
    return results
