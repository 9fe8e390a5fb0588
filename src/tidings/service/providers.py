"""One provider instance per app and provider name, rebuilt when the app's settings change."""

from __future__ import annotations

import asyncio
from typing import Any

from ..domain.apps import DEFAULT_PROVIDER
from ..domain.errors import NotConfigured
from ..ports import Provider, ProviderFactory, Store
from .apps import provider_settings
from .secrets import SecretBox
from .ttlcache import TtlCache


class ProviderPool:
    def __init__(self, store: Store, box: SecretBox, factory: ProviderFactory,
                 concurrency: dict[str, int] | None = None, default_concurrency: int = 32,
                 recheck_seconds: float = 2.0) -> None:
        self._store = store
        # An entry means: the built provider was checked against the app's settings lately.
        self._checked: TtlCache[tuple[str, str], bool] = TtlCache(recheck_seconds)
        self._box = box
        self._factory = factory
        self._built: dict[tuple[str, str], tuple[Any, Provider]] = {}
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._building: dict[tuple[str, str], asyncio.Lock] = {}
        self._concurrency = concurrency or {}
        self._default_concurrency = default_concurrency

    def limit(self, provider_name: str) -> asyncio.Semaphore:
        """Bounds the batches in flight to one provider, across all apps of this process."""
        sem = self._limits.get(provider_name)
        if sem is None:
            size = self._concurrency.get(provider_name, self._default_concurrency)
            sem = self._limits[provider_name] = asyncio.Semaphore(max(size, 1))
        return sem

    async def get(self, app_id: str, name: str) -> Provider:
        """The app's provider, rebuilt when the app's settings changed; the settings are looked
        at again at most every `recheck_seconds`, not for every batch."""
        key = (app_id, name)
        cached = self._built.get(key)
        if cached is not None and self._checked.lookup(key)[0]:
            return cached[1]
        lock = self._building.setdefault(key, asyncio.Lock())
        async with lock:  # lanes asking at once build one provider, not one each (and leak)
            return await self._refresh(key, app_id, name)

    async def _refresh(self, key: tuple[str, str], app_id: str, name: str) -> Provider:
        cached = self._built.get(key)
        if cached is not None and self._checked.lookup(key)[0]:
            return cached[1]
        async with self._store.reader() as tx:
            app = await tx.apps.get(app_id)
        if app is None:
            raise NotConfigured(f"app {app_id} no longer exists")
        version = app.updated_at
        self._checked.put(key, True)
        if cached is not None and cached[0] == version:
            return cached[1]
        settings = provider_settings(app, self._box)
        if name not in settings and name != DEFAULT_PROVIDER:
            raise NotConfigured(f"provider {name!r} is not configured for app {app_id}")
        provider = self._factory(name, settings.get(name, {}))
        if cached is not None:
            await cached[1].close()
        self._built[(app_id, name)] = (version, provider)
        return provider

    async def close(self) -> None:
        for _, provider in self._built.values():
            await provider.close()
        self._built.clear()
