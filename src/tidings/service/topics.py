"""Topics: create, list, delete; subscribe and unsubscribe users."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..domain.errors import NotFound, StoreConflict
from ..domain.pagination import Page, check_limit
from ..domain.topics import (
    Subscription,
    Topic,
    after_key,
    before_subscriber,
    check_topic_key,
    check_topic_name,
    key_cursor,
    subscriber_cursor,
)
from ..domain.validation import check_user_id
from ..ports import Clock, Store

# A subscribe that creates the user's profile can lose that race to another request for the
# same new user; the retry then finds the profile there.
_ATTEMPTS = 3
T = TypeVar("T")


@dataclass(frozen=True)
class TopicDetail:
    topic: Topic
    subscribers: int


class Topics:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def put(self, app_id: str, key: str, name: str | None,
                  name_given: bool) -> tuple[Topic, bool]:
        """Create (True) or update; a name left out is kept, a `None` given clears it."""
        check_topic_key(key)
        check_topic_name(name)
        async with self._store.transaction() as tx:
            now = self._clock.now()
            found = await tx.topics.get(app_id, key)
            if found is not None and not name_given:
                name = found.name
            created = await tx.topics.put(Topic(app_id, key, name, now, now))
            # Read back: a concurrent first PUT may have created it since the read above.
            topic = await tx.topics.get(app_id, key)
        if topic is None:
            raise StoreConflict(f"topic {key} was deleted concurrently; try again")
        return topic, created

    async def get(self, app_id: str, key: str) -> TopicDetail:
        check_topic_key(key)
        async with self._store.reader() as tx:
            topic = await tx.topics.get(app_id, key)
            if topic is None:
                raise NotFound(f"topic {key} not found")
            return TopicDetail(topic, await tx.topics.count(app_id, key))

    async def list(self, app_id: str, limit: int, cursor: str | None) -> Page[Topic]:
        check_limit(limit)
        after = after_key(cursor)
        async with self._store.reader() as tx:
            fetched = await tx.topics.list(app_id, limit + 1, after)
        return _page(fetched, limit, lambda t: key_cursor(t.key))

    async def delete(self, app_id: str, key: str) -> None:
        """Removes the topic with its subscriptions."""
        check_topic_key(key)
        async with self._store.transaction() as tx:
            if not await tx.topics.delete(app_id, key):
                raise NotFound(f"topic {key} not found")

    async def subscribe(self, app_id: str, key: str, user_id: str) -> bool:
        """True when the user was not subscribed before. A user without a profile gets an empty
        one, as when a device registers: the app may subscribe users before it describes them.
        """
        check_topic_key(key)
        check_user_id(user_id)
        for _ in range(_ATTEMPTS):
            try:
                async with self._store.transaction() as tx:
                    if await tx.topics.get(app_id, key) is None:
                        raise NotFound(f"topic {key} not found")
                    now = self._clock.now()
                    await tx.users.ensure(app_id, user_id, now)
                    return await tx.topics.subscribe(app_id, key, user_id, now)
            except StoreConflict:
                continue
        raise StoreConflict(f"user {user_id} is being changed concurrently; try again")

    async def unsubscribe(self, app_id: str, key: str, user_id: str) -> None:
        check_topic_key(key)
        check_user_id(user_id)
        async with self._store.transaction() as tx:
            if await tx.topics.get(app_id, key) is None:
                raise NotFound(f"topic {key} not found")
            if not await tx.topics.unsubscribe(app_id, key, user_id):
                raise NotFound(f"user {user_id} is not subscribed to topic {key}")

    async def subscribers(self, app_id: str, key: str, limit: int,
                          cursor: str | None) -> Page[Subscription]:
        """Newest first."""
        check_topic_key(key)
        check_limit(limit)
        before = before_subscriber(cursor)
        async with self._store.reader() as tx:
            if await tx.topics.get(app_id, key) is None:
                raise NotFound(f"topic {key} not found")
            fetched = await tx.topics.subscribers(app_id, key, limit + 1, before)
        return _page(fetched, limit, subscriber_cursor)

    async def of_user(self, app_id: str, user_id: str, limit: int,
                      cursor: str | None) -> Page[Subscription]:
        """The user's topics by key."""
        check_user_id(user_id)
        check_limit(limit)
        after = after_key(cursor)
        async with self._store.reader() as tx:
            fetched = await tx.topics.of_user(app_id, user_id, limit + 1, after)
        return _page(fetched, limit, lambda s: key_cursor(s.topic))


def _page(fetched: list[T], limit: int, cursor_of: Callable[[T], str]) -> Page[T]:
    """From `limit + 1` rows: the extra one only says that there is more."""
    items = fetched[:limit]
    return Page(items, cursor_of(items[-1]) if len(fetched) > limit else None)
