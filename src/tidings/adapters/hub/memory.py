"""The hub of a single process: events go straight from the publisher to the connections of
the same process. It is also the local half of every other hub, which receives an event from
elsewhere and hands it to the connections held here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ...domain.stream import Kick, StreamEvent, resync_marker
from ...ports import HubSubscription

log = logging.getLogger("tidings.hub")

Deliver = Callable[[StreamEvent], None]


@dataclass(eq=False)
class Subscription:
    """One connection's interest in one user's events (compared by identity: a user's phone
    and two browser tabs are three subscriptions)."""

    app_id: str
    user_id: str
    deliver: Deliver = field(repr=False)


class MemoryHub:
    def __init__(self) -> None:
        self._subscribers: dict[tuple[str, str], dict[Subscription, None]] = {}
        self._on_kick: Callable[[Kick], None] | None = None

    async def start(self, on_kick: Callable[[Kick], None]) -> None:
        self._on_kick = on_kick

    async def publish(self, events: Sequence[StreamEvent]) -> None:
        self.fan_out(events)

    async def subscribe(self, app_id: str, user_id: str, deliver: Deliver) -> Subscription:
        return self.add(app_id, user_id, deliver)[0]

    async def unsubscribe(self, subscription: HubSubscription) -> None:
        self.remove(subscription)

    async def kick(self, kick: Kick) -> None:
        if self._on_kick is not None:
            call_on_kick(self._on_kick, kick)

    async def close(self) -> None:
        self._subscribers.clear()

    # -- the local registry, shared with the hubs that span processes --------------------
    def add(self, app_id: str, user_id: str, deliver: Deliver) -> tuple[Subscription, bool]:
        """Registers a subscriber; says whether it is the user's first one here."""
        sub = Subscription(app_id, user_id, deliver)
        subs = self._subscribers.setdefault((app_id, user_id), {})
        subs[sub] = None
        return sub, len(subs) == 1

    def remove(self, subscription: HubSubscription) -> bool:
        """Forgets a subscriber; says whether it was the user's last one here (False when
        it was unknown, e.g. removed twice)."""
        if not isinstance(subscription, Subscription):
            return False
        key = (subscription.app_id, subscription.user_id)
        subs = self._subscribers.get(key)
        if subs is None or subscription not in subs:
            return False
        del subs[subscription]
        if subs:
            return False
        del self._subscribers[key]
        return True

    def has_subscribers(self, app_id: str, user_id: str) -> bool:
        return (app_id, user_id) in self._subscribers

    def resync(self, match: Callable[[str, str], bool], at: datetime) -> int:
        """Hands a resync marker to every local subscriber of the users `match` selects (after
        the hub may have missed their messages); returns how many got one."""
        told = 0
        for (app_id, user_id), subs in list(self._subscribers.items()):
            if match(app_id, user_id):
                marker = resync_marker(app_id, user_id, at)
                for sub in tuple(subs):
                    try:
                        sub.deliver(marker)
                        told += 1
                    except Exception:
                        log.exception("a stream subscriber of %s/%s failed on resync",
                                      app_id, user_id)
        return told

    def fan_out(self, events: Sequence[StreamEvent]) -> None:
        """Hands each event to every local subscriber of its user. A subscriber that raises is
        logged and skipped: one broken connection must not cost the others their events."""
        subscribers = self._subscribers
        for event in events:
            subs = subscribers.get((event.app_id, event.user_id))
            if not subs:
                continue
            for sub in tuple(subs):  # a deliver may unsubscribe itself
                try:
                    sub.deliver(event)
                except Exception:
                    log.exception("a stream subscriber of %s/%s failed on event %d",
                                  event.app_id, event.user_id, event.seq)


def call_on_kick(on_kick: Callable[[Kick], None], kick: Kick) -> None:
    try:
        on_kick(kick)
    except Exception:
        log.exception("closing streams for %r failed", kick)
