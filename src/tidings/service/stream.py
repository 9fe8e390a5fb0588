"""Users' live streams: what a connection replays when it opens, and publishing changes to the
hub once the transaction that made them has committed (never before: an event for a change
that then rolls back would show the user something that does not exist)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from ..domain.errors import TidingsError
from ..domain.notifications import Notification
from ..domain.stream import (
    CREATED,
    READ,
    Kick,
    StreamEvent,
    StreamHead,
    inbox_item,
    is_streamed,
    needs_reset,
)
from ..ports import Clock, Hub, HubSubscription, Store, StreamEntry, Tx

log = logging.getLogger("tidings.stream")


@dataclass(frozen=True)
class Opened:
    subscription: HubSubscription
    head: StreamHead
    replay: list[StreamEvent]  # what the client missed, oldest first
    reset: bool  # the resume point is gone (or never was): the client must refetch

    def held(self) -> Opened:
        """What a connection keeps once it has sent the replay: the subscription."""
        return Opened(self.subscription, self.head, [], self.reset)


class Streams:
    def __init__(self, store: Store, hub: Hub, clock: Clock, *, retention_seconds: int,
                 replay_limit: int = 1000) -> None:
        self._store = store
        self._hub = hub
        self._clock = clock
        self._retention = timedelta(seconds=retention_seconds)
        self.replay_limit = replay_limit

    @property
    def hub(self) -> Hub:
        return self._hub

    # -- writing (inside the caller's transaction) ---------------------------------------
    async def created(self, tx: Tx, items: Sequence[Notification]) -> list[StreamEvent]:
        """Number the in-app notifications among `items` on their users' streams."""
        by_app: dict[str, list[StreamEntry]] = {}
        for n in items:
            if is_streamed(n):
                assert n.user_id is not None
                by_app.setdefault(n.app_id, []).append(
                    StreamEntry(n.user_id, CREATED, inbox_item(n)))
        out: list[StreamEvent] = []
        for app_id, entries in by_app.items():
            out.extend(await tx.stream.append(app_id, entries, self._clock.now()))
        return out

    async def read(self, tx: Tx, app_id: str, user_id: str,
                   data: dict[str, object]) -> list[StreamEvent]:
        return await tx.stream.append(app_id, [StreamEntry(user_id, READ, data)],
                                      self._clock.now())

    # -- after the commit ----------------------------------------------------------------
    async def publish(self, events: Sequence[StreamEvent]) -> None:
        """Best effort: a connection that misses an event finds the hole in the numbers at
        the next one and reads it from the store; a client reconnecting replays it."""
        # An event the store has not numbered (0) is not committed yet: on DynamoDB, part of a
        # large send its journal's recovery finishes; clients read it at their next sync.
        events = [e for e in events if e.seq > 0]
        if not events:
            return
        try:
            await self._hub.publish(events)
        except (TidingsError, OSError) as exc:
            log.warning("could not publish %d stream events: %s", len(events), exc)

    async def kick(self, kick: Kick) -> None:
        try:
            await self._hub.kick(kick)
        except (TidingsError, OSError) as exc:
            log.warning("could not tell other nodes to close streams (%s): %s", kick.reason, exc)

    # -- connections ---------------------------------------------------------------------
    async def open(self, app_id: str, user_id: str, after: int | None,
                   deliver: Callable[[StreamEvent], None]) -> Opened:
        """Subscribe first, then read the store: an event committed meanwhile arrives live
        as well as in the read, and the connection drops the second copy by its number."""
        subscription = await self._hub.subscribe(app_id, user_id, deliver)
        try:
            head, replay, reset = await self.replay(app_id, user_id, after)
        except BaseException:
            await self._hub.unsubscribe(subscription)
            raise
        return Opened(subscription, head, replay, reset)

    async def replay(self, app_id: str, user_id: str,
                     after: int | None) -> tuple[StreamHead, list[StreamEvent], bool]:
        """The stream's head, the events after `after` (none without one) and whether the
        client must refetch instead (the resume point is gone, or too far behind)."""
        async with self._store.reader() as tx:
            head = await tx.stream.head(app_id, user_id)
            if after is None:
                return head, [], False
            if needs_reset(after, head) or head.seq - after > self.replay_limit:
                return head, [], True
            replay = await tx.stream.since(app_id, user_id, after, head.seq, self.replay_limit)
        if len(replay) != head.seq - after:  # purged meanwhile: a hole in what is kept
            return head, [], True
        return head, replay, False

    async def head(self, app_id: str, user_id: str) -> StreamHead:
        async with self._store.reader() as tx:
            return await tx.stream.head(app_id, user_id)

    async def missing(self, app_id: str, user_id: str, after: int, upto: int) -> list[StreamEvent]:
        """The events between what a connection sent and what just arrived."""
        async with self._store.reader() as tx:
            return await tx.stream.since(app_id, user_id, after, upto, self.replay_limit)

    async def close(self, subscription: HubSubscription) -> None:
        await self._hub.unsubscribe(subscription)

    async def purge(self) -> int:
        async with self._store.transaction() as tx:
            return await tx.stream.purge(self._clock.now() - self._retention)
