"""Apps: create, configure, list, delete. Provider settings are sealed before they are stored."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..domain.apps import DEFAULT_PROVIDER, App
from ..domain.errors import FieldError, NotFound, StoreConflict, ValidationFailed
from ..domain.validation import check_app_id
from ..domain.webhooks import new_secret
from ..ports import Clock, Store
from .secrets import SecretBox
from .ttlcache import TtlCache


@dataclass(frozen=True)
class AppChanges:
    name: str | None = None
    # name -> settings, or None to remove that provider; providers not named stay as they are,
    # since their secrets are write-only and a client cannot send them back.
    providers: dict[str, dict[str, Any] | None] | None = None
    routing: dict[str, Any] | None = None
    defaults: dict[str, Any] | None = None
    webhook: dict[str, Any] | None = None
    clear_webhook: bool = False
    webhook_secret: str | None = None  # given by the operator; one is made when there is none


def provider_settings(app: App, box: SecretBox) -> dict[str, dict[str, Any]]:
    if not app.providers_secret:
        return {}
    value = json.loads(box.open(app.providers_secret))
    return value if isinstance(value, dict) else {}


def _routed_names(routing: dict[str, Any]) -> list[tuple[str, str]]:
    named = []
    for channel, rule in routing.items():
        if isinstance(rule, str):
            named.append((f"routing.{channel}", rule))
        elif isinstance(rule, dict):
            named.extend((f"routing.{channel}.{platform}", name) for platform, name in rule.items())
    return named


class Apps:
    def __init__(self, store: Store, clock: Clock, box: SecretBox,
                 cache_seconds: float = 2.0) -> None:
        self._store = store
        self._clock = clock
        self._box = box
        self._cache: TtlCache[str, App] = TtlCache(cache_seconds)

    async def cached(self, app_id: str) -> App:
        """The app as the hot paths need it (routing, defaults): a change made through this
        process shows at once, one made through another process within `cache_seconds`."""
        fresh, app = self._cache.lookup(app_id)
        if fresh and app is not None:
            return app
        return self._cache.put(app_id, await self.get(app_id))

    async def put(self, app_id: str, changes: AppChanges) -> tuple[App, bool]:
        check_app_id(app_id)
        for _ in range(2):
            try:
                return await self._put(app_id, changes)
            except StoreConflict:
                continue  # created concurrently: apply the changes as an update
        raise StoreConflict(f"app {app_id} is being changed concurrently; try again")

    async def _put(self, app_id: str, changes: AppChanges) -> tuple[App, bool]:
        now = self._clock.now()
        async with self._store.transaction() as tx:
            app = await tx.apps.get(app_id)
            created = app is None
            if app is None:
                if changes.name is None:
                    raise ValidationFailed.on("name", "is required when creating an app")
                app = App(id=app_id, name=changes.name, created_at=now)
            if changes.name is not None:
                app.name = changes.name
            if changes.providers is not None:
                settings = provider_settings(app, self._box)
                for name, config in changes.providers.items():
                    if config is None:
                        settings.pop(name, None)
                    else:
                        settings[name] = config
                app.providers_secret = self._box.seal(json.dumps(settings)) if settings else None
                app.provider_names = sorted(settings)
            if changes.routing is not None:
                app.routing = changes.routing
            if changes.defaults is not None:
                app.defaults = changes.defaults
            if changes.clear_webhook:
                app.webhook = app.webhook_secret = None
            elif changes.webhook is not None:
                app.webhook = changes.webhook
                if changes.webhook_secret is not None or app.webhook_secret is None:
                    app.webhook_secret = self._box.seal(changes.webhook_secret or new_secret())
            missing = [FieldError(where, f"provider {name!r} is not configured for this app")
                       for where, name in _routed_names(app.routing)
                       if name != DEFAULT_PROVIDER and name not in app.provider_names]
            if missing:
                raise ValidationFailed("routing names providers the app has no settings for",
                                       errors=missing)
            app.updated_at = now
            if created:
                await tx.apps.add(app)
            else:
                await tx.apps.update(app)
        self._cache.drop(app_id)
        return app, created

    def webhook_secret(self, app: App) -> str | None:
        return self._box.open(app.webhook_secret) if app.webhook_secret else None

    async def get(self, app_id: str) -> App:
        async with self._store.reader() as tx:
            app = await tx.apps.get(app_id)
        if app is None:
            raise NotFound(f"app {app_id} not found")
        return app

    async def list(self, limit: int, after: str | None) -> list[App]:
        async with self._store.reader() as tx:
            return await tx.apps.list(limit, after)

    async def delete(self, app_id: str) -> None:
        async with self._store.transaction() as tx:
            if not await tx.apps.delete(app_id):
                raise NotFound(f"app {app_id} not found")
        self._cache.drop(app_id)
