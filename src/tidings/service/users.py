"""Recipients' profiles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..domain.errors import NotFound, StoreConflict
from ..domain.segments import Segment
from ..domain.users import User
from ..domain.validation import check_user_id
from ..ports import Clock, Store


@dataclass(frozen=True)
class Profile:
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    attributes: dict[str, Any] | None = None
    quiet_hours: dict[str, str] | None = None


class Users:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def put(self, app_id: str, user_id: str, profile: Profile,
                  fields: frozenset[str]) -> tuple[User, bool]:
        """Upsert: fields the request names are replaced, the others kept."""
        check_user_id(user_id)
        for _ in range(2):
            try:
                async with self._store.transaction() as tx:
                    now = self._clock.now()
                    user = await tx.users.get(app_id, user_id) or User(app_id, user_id, created_at=now)
                    if "email" in fields and profile.email != user.email:
                        # A new address has not bounced: it is mailed again.
                        user.email_undeliverable_at = user.email_undeliverable_reason = None
                    for name in fields:
                        value = getattr(profile, name)
                        setattr(user, name, value if value is not None or name != "attributes" else {})
                    user.updated_at = now
                    created = await tx.users.upsert(user)
                return user, created
            except StoreConflict:
                continue
        raise StoreConflict(f"user {user_id} is being changed concurrently; try again")

    async def get(self, app_id: str, user_id: str) -> User:
        async with self._store.reader() as tx:
            user = await tx.users.get(app_id, user_id)
        if user is None:
            raise NotFound(f"user {user_id} not found")
        return user

    async def delete(self, app_id: str, user_id: str) -> None:
        async with self._store.transaction() as tx:
            if not await tx.users.delete(app_id, user_id):
                raise NotFound(f"user {user_id} not found")

    async def list(self, app_id: str, segment: Segment | None, limit: int,
                   after: str | None) -> list[User]:
        """The app's users in `segment` (all when None), by id, after the id `after`."""
        async with self._store.reader() as tx:
            return await tx.users.list(app_id, segment, limit, after)

    async def count(self, app_id: str, segment: Segment | None) -> int:
        async with self._store.reader() as tx:
            return await tx.users.count(app_id, segment)
