"""Each user's inbox: every notification sent to them, newest first, with read state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..domain.apps import App
from ..domain.errors import Conflict, NotFound, StoreConflict, ValidationFailed
from ..domain.ids import floor_id
from ..domain.notifications import Notification, NotificationStatus
from ..domain.pagination import check_limit, id_cursor, page_of
from ..domain.webhooks import iso
from ..ports import Clock, InboxQuery, Store
from .events import Events
from .stream import Streams


@dataclass(frozen=True)
class InboxPage:
    items: list[Notification]
    next_cursor: str | None
    unread_count: int


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


class Inbox:
    def __init__(self, store: Store, clock: Clock, events: Events | None = None,
                 streams: Streams | None = None) -> None:
        self._store = store
        self._streams = streams
        self._clock = clock
        self._events = events

    async def page(self, app_id: str, user_id: str, *, channel: str | None = None,
                   since: datetime | None = None, until: datetime | None = None,
                   unread_only: bool = False, limit: int = 50, cursor: str | None = None,
                   with_deliveries: bool = False) -> InboxPage:
        check_limit(limit)
        if since is not None and until is not None and since >= until:
            raise ValidationFailed.on("until", "must be after since")
        before = id_cursor(cursor)
        if until is not None:
            bound = floor_id(_ms(until))
            before = bound if before is None else min(before, bound)
        query = InboxQuery(channel=channel, unread_only=unread_only,
                           after_id=floor_id(_ms(since)) if since is not None else None,
                           before_id=before)
        async with self._store.reader() as tx:
            items = await tx.notifications.inbox(app_id, user_id, query, limit + 1,
                                                 with_deliveries)
            unread = await tx.notifications.unread_count(app_id, user_id, channel)
        page = page_of(items, limit)
        return InboxPage(page.items, page.next_cursor, unread)

    async def read(self, app_id: str, user_id: str, notification_id: str) -> Notification:
        app = await self._events.app(app_id) if self._events else None
        now = self._clock.now()
        try:
            return await self._read(app, app_id, user_id, notification_id, now)
        except StoreConflict:
            # Read meanwhile by another request (a store that checks optimistically, DynamoDB,
            # says so at commit): again, it now finds it read and answers as SQL does.
            return await self._read(app, app_id, user_id, notification_id, now)

    async def _read(self, app: App | None, app_id: str, user_id: str, notification_id: str,
                    now: datetime) -> Notification:
        async with self._store.transaction() as tx:
            marked = await tx.notifications.mark_read(app_id, user_id, notification_id, now)
            if marked is None:
                raise NotFound(f"notification {notification_id} not found")
            found, read_now = marked
            if read_now and self._events:
                await self._events.emit(tx, app, "notification.read", {
                    "notification_id": found.id, "user_id": user_id, "read_at": iso(now)}, now)
            streamed = (await self._streams.read(tx, app_id, user_id, {
                "notification_id": found.id, "read_at": iso(now)})
                if read_now and self._streams else [])
        if streamed:
            assert self._streams is not None
            await self._streams.publish(streamed)
        return found

    async def read_all(self, app_id: str, user_id: str, channel: str | None = None,
                       until: datetime | None = None) -> int:
        before = floor_id(_ms(until)) if until is not None else None
        app = await self._events.app(app_id) if self._events else None
        now = self._clock.now()
        async with self._store.transaction() as tx:
            updated = await tx.notifications.mark_all_read(app_id, user_id, channel, before, now)
            if updated and self._events:
                await self._events.emit(tx, app, "notification.read_all", {
                    "user_id": user_id, "channel": channel, "updated": updated,
                    "until": iso(until) if until else None, "read_at": iso(now)}, now)
            streamed = (await self._streams.read(tx, app_id, user_id, {
                "all": True, "channel": channel, "until": iso(until) if until else None,
                "updated": updated, "read_at": iso(now)})
                if updated and self._streams else [])
        if streamed:
            assert self._streams is not None
            await self._streams.publish(streamed)
        return updated

    async def get(self, app_id: str, notification_id: str) -> Notification:
        async with self._store.reader() as tx:
            found = await tx.notifications.get(app_id, notification_id)
        if found is None:
            raise NotFound(f"notification {notification_id} not found")
        return found

    async def cancel(self, app_id: str, notification_id: str) -> Notification:
        """Only a notification that is still scheduled can be canceled (409 once it has gone
        out); canceling it again is a no-op."""
        async with self._store.transaction() as tx:
            found = await tx.notifications.cancel(app_id, notification_id, self._clock.now())
        if found is None:
            raise NotFound(f"notification {notification_id} not found")
        if found.status != NotificationStatus.CANCELED:
            raise Conflict(f"notification {found.id} is {found.status}; only a scheduled "
                           "notification can be canceled")
        return found

    async def by_address(self, app_id: str, address: str, limit: int = 50,
                         cursor: str | None = None) -> tuple[list[Notification], str | None]:
        check_limit(limit)
        async with self._store.reader() as tx:
            items = await tx.notifications.by_address(app_id, address, limit + 1,
                                                      id_cursor(cursor))
        page = page_of(items, limit)
        return page.items, page.next_cursor
