"""Each user's notification preferences: which channels, per category, they opted out of."""

from __future__ import annotations

from typing import Any

from ..domain.errors import StoreConflict
from ..domain.preferences import Preferences, mandatory, parse_preferences
from ..domain.validation import check_user_id
from ..ports import Clock, Store
from .apps import Apps


class PreferenceSettings:
    def __init__(self, store: Store, clock: Clock, apps: Apps) -> None:
        self._store = store
        self._clock = clock
        self._apps = apps

    async def get(self, app_id: str, user_id: str) -> tuple[Preferences, frozenset[str]]:
        app = await self._apps.cached(app_id)
        async with self._store.reader() as tx:
            doc = await tx.preferences.get(app_id, user_id)
        return Preferences.from_doc(doc or {}), mandatory(app.defaults)

    async def put(self, app_id: str, user_id: str,
                  doc: dict[str, Any]) -> tuple[Preferences, frozenset[str]]:
        """Replace the user's preferences (a user without a profile gets an empty one)."""
        check_user_id(user_id)
        app = await self._apps.cached(app_id)
        required = mandatory(app.defaults)
        prefs = parse_preferences(doc, required, "")
        for _ in range(2):
            try:
                async with self._store.transaction() as tx:
                    now = self._clock.now()
                    await tx.users.ensure(app_id, user_id, now)
                    await tx.preferences.put(app_id, user_id, prefs.to_doc(), now)
                return prefs, required
            except StoreConflict:
                continue
        raise StoreConflict(f"user {user_id} is being changed concurrently; try again")
