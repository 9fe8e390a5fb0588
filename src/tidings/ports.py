"""The interfaces the service layer needs. Adapters implement them; nothing here does I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .domain.apps import ApiKey, App
from .domain.broadcasts import Broadcast, Progress
from .domain.delivery import Claim, OutboundMessage, Outcome, SendResult
from .domain.devices import Device
from .domain.events import AppEvent, EventOutcome
from .domain.idempotency import IdempotencyRecord
from .domain.notifications import Delivery, Notification
from .domain.receipts import Receipt
from .domain.segments import Segment
from .domain.stream import Kick, StreamEvent, StreamHead
from .domain.topics import Subscription, Topic
from .domain.users import User


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass(frozen=True)
class InboxQuery:
    channel: str | None = None
    unread_only: bool = False
    after_id: str | None = None  # lower id bound, inclusive (from `since`)
    before_id: str | None = None  # upper id bound, exclusive (from `until` or the cursor)


class AppRepo(Protocol):
    async def get(self, app_id: str) -> App | None: ...
    async def list(self, limit: int, after: str | None) -> list[App]: ...
    async def add(self, app: App) -> None: ...
    async def update(self, app: App) -> None: ...
    async def delete(self, app_id: str) -> bool:
        """Remove the app and everything it owns: keys, users, devices, notifications."""
        ...


class KeyRepo(Protocol):
    async def add(self, key: ApiKey) -> None: ...
    async def by_hash(self, key_hash: str) -> ApiKey | None: ...
    async def get(self, key_id: str) -> ApiKey | None: ...
    async def active(self, app_id: str | None) -> list[ApiKey]:
        """Unrevoked keys of the app; `None` means the operator's admin keys."""
        ...
    async def revoke(self, key_id: str, at: datetime) -> bool: ...


class UserRepo(Protocol):
    async def get(self, app_id: str, user_id: str) -> User | None: ...
    async def get_many(self, app_id: str, user_ids: Sequence[str]) -> dict[str, User]: ...
    async def upsert(self, user: User) -> bool:
        """Insert or replace the profile; True when it was created."""
        ...
    async def ensure(self, app_id: str, user_id: str, at: datetime) -> None:
        """Create an empty profile if the user has none."""
        ...
    async def delete(self, app_id: str, user_id: str) -> bool:
        """Remove the profile, devices, inbox and deliveries; True if anything existed."""
        ...
    async def list(self, app_id: str, segment: Segment | None, limit: int,
                   after: str | None) -> list[User]:
        """The app's users that match `segment` (all when None), by id, after `after`."""
        ...
    async def count(self, app_id: str, segment: Segment | None) -> int: ...
    async def mark_email_undeliverable(self, app_id: str, user_id: str, address: str,
                                       reason: str, at: datetime) -> bool:
        """Mark the user's e-mail undeliverable if it still is `address`; True if marked."""
        ...


class PreferenceRepo(Protocol):
    async def get(self, app_id: str, user_id: str) -> dict[str, Any] | None: ...
    async def get_many(self, app_id: str, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored preferences of those users that have any."""
        ...
    async def put(self, app_id: str, user_id: str, doc: dict[str, Any], at: datetime) -> None: ...


class TopicRepo(Protocol):
    async def put(self, topic: Topic) -> bool:
        """Create, or update the name of, a topic; True when it was created."""
        ...
    async def get(self, app_id: str, key: str) -> Topic | None: ...
    async def delete(self, app_id: str, key: str) -> bool:
        """Remove the topic and its subscriptions."""
        ...
    async def subscribe(self, app_id: str, key: str, user_id: str, at: datetime) -> bool:
        """True when the user was not subscribed before; raises NotFound when the topic does
        not exist."""
        ...
    async def unsubscribe(self, app_id: str, key: str, user_id: str) -> bool: ...
    async def subscribers(self, app_id: str, key: str, limit: int,
                          before: tuple[int, str] | None) -> list[Subscription]:
        """Newest first; `before` is the (created_at ms, user_id) of the last one seen."""
        ...
    async def subscriber_ids(self, app_id: str, key: str, after: str | None,
                             limit: int) -> list[str]:
        """User ids in ascending order after `after` (a broadcast's expansion)."""
        ...
    async def count(self, app_id: str, key: str) -> int: ...
    async def of_user(self, app_id: str, user_id: str, limit: int,
                      after: str | None) -> list[Subscription]:
        """The user's subscriptions by topic key."""
        ...
    async def list(self, app_id: str, limit: int, after: str | None) -> list[Topic]:
        """By key, after `after`."""
        ...


class DeviceRepo(Protocol):
    async def get(self, app_id: str, device_id: str) -> Device | None: ...
    async def by_token(self, app_id: str, token_key: str) -> Device | None: ...
    async def for_user(self, app_id: str, user_id: str) -> list[Device]: ...
    async def for_users(self, app_id: str, user_ids: Sequence[str]) -> dict[str, list[Device]]: ...
    async def add(self, device: Device) -> None:
        """Raises StoreConflict when the token is already paired in the app."""
        ...
    async def update(self, device: Device) -> None: ...
    async def delete(self, app_id: str, device_id: str) -> bool: ...


class NotificationRepo(Protocol):
    async def add_many(self, notifications: Sequence[Notification]) -> None:
        """Write notifications with their deliveries (the outbox)."""
        ...
    async def get(self, app_id: str, notification_id: str) -> Notification | None: ...
    async def inbox(self, app_id: str, user_id: str, query: InboxQuery, limit: int,
                    with_deliveries: bool = True) -> list[Notification]: ...
    async def unread_count(self, app_id: str, user_id: str, channel: str | None) -> int: ...
    async def mark_read(self, app_id: str, user_id: str, notification_id: str,
                        at: datetime) -> tuple[Notification, bool] | None:
        """The notification, and whether this call read it (False: it was read before and keeps
        its first `read_at`); None when the user has no such notification."""
        ...
    async def mark_all_read(self, app_id: str, user_id: str, channel: str | None,
                            before_id: str | None, at: datetime) -> int: ...
    async def by_address(self, app_id: str, address: str, limit: int,
                         before_id: str | None) -> list[Notification]: ...
    async def due(self, now: datetime, limit: int) -> list[Notification]:
        """Scheduled notifications whose time has come, locked for this transaction (another
        scheduler skips them)."""
        ...
    async def fire(self, items: Sequence[Notification]) -> None:
        """Store the status and deliveries planned for scheduled notifications now due, and
        count them unread."""
        ...
    async def cancel(self, app_id: str, notification_id: str, at: datetime) -> Notification | None:
        """Cancel a still scheduled notification; None when there is no such notification.
        One that is no longer scheduled comes back unchanged."""
        ...


class BroadcastRepo(Protocol):
    async def add(self, broadcast: Broadcast) -> None: ...
    async def get(self, app_id: str, broadcast_id: str) -> Broadcast | None: ...
    async def list(self, app_id: str, limit: int, before_id: str | None) -> list[Broadcast]: ...
    async def claim(self, now: datetime, lease_seconds: float, lease_id: str) -> Broadcast | None:
        """Take one broadcast that is due (or whose worker's lease expired) under a lease."""
        ...
    async def advance(self, broadcast: Broadcast, lease_id: str,
                      lease_until: datetime | None) -> bool:
        """Store the broadcast's cursor, counts and status if `lease_id` still holds it, and
        keep the lease until `lease_until` (None: the work is over, let it go); False when the
        lease no longer holds (the batch written with it must then roll back)."""
        ...
    async def cancel(self, app_id: str, broadcast_id: str, at: datetime) -> Broadcast | None: ...
    async def progress(self, app_id: str, broadcast_id: str) -> Progress:
        """How many of the broadcast's notifications are in each status."""
        ...
    async def sweep(self, broadcast_id: str, after_user: str | None, reason: str,
                    at: datetime, limit: int) -> str | None:
        """For a canceled broadcast: cancel the still scheduled notifications and skip the
        pending deliveries of up to `limit` recipients after `after_user` (by user id).
        Returns the last user id swept, None when none were left."""
        ...


class DeliveryQueue(Protocol):
    async def claim(self, now: datetime, limit: int, lease_seconds: float,
                    lease_id: str) -> list[Claim]:
        """Take up to `limit` due deliveries (pending, or whose lease expired) under a lease."""
        ...
    async def record(self, outcomes: Sequence[Outcome]) -> int:
        """Store outcomes of deliveries still under their lease, disable devices the providers
        reported gone, and bring the notifications' status up to date. Returns how many
        outcomes were taken (a lost lease drops its outcome)."""
        ...
    async def receipt(self, app_id: str, receipt: Receipt) -> tuple[Delivery, bool] | None:
        """Apply a provider's receipt to the app's delivery with that provider message id
        (and bring its notification's status up to date): the delivery as it is now, and
        whether the receipt changed it; None when no delivery matches."""
        ...


class EventOutbox(Protocol):
    """Outgoing app events, written in the transaction of the change they report."""

    async def add(self, events: Sequence[AppEvent]) -> None: ...
    async def claim(self, now: datetime, limit: int, lease_seconds: float,
                    lease_id: str) -> list[AppEvent]: ...
    async def record(self, outcomes: Sequence[EventOutcome]) -> int: ...
    async def purge(self, before: datetime) -> int:
        """Forget sent and given-up events older than `before`."""
        ...


class IdempotencyRepo(Protocol):
    async def get(self, scope: str, key: str) -> IdempotencyRecord | None: ...
    async def put(self, record: IdempotencyRecord) -> None:
        """Raises StoreConflict when the key was taken meanwhile."""
        ...
    async def purge(self, now: datetime) -> int: ...


@dataclass(frozen=True)
class StreamEntry:
    """A change to report on a user's stream; the log gives it its sequence number."""

    user_id: str
    type: str
    data: dict[str, object]


class StreamLog(Protocol):
    """Each user's stream of inbox changes, numbered 1, 2, 3, … per user without holes."""

    async def append(self, app_id: str, entries: Sequence[StreamEntry],
                     at: datetime) -> list[StreamEvent]:
        """Number and store the entries (in the order given, per user) in this transaction,
        after the unread counters moved; each event carries the counts after it."""
        ...
    async def since(self, app_id: str, user_id: str, after: int, upto: int | None,
                    limit: int) -> list[StreamEvent]:
        """Stored events with `after < seq <= upto`, oldest first."""
        ...
    async def head(self, app_id: str, user_id: str) -> StreamHead: ...
    async def purge(self, before: datetime) -> int:
        """Forget events older than `before` (a resume from before them gets a reset)."""
        ...


class Tx(Protocol):
    """One unit of work: everything done through it commits together or not at all."""

    apps: AppRepo
    keys: KeyRepo
    users: UserRepo
    devices: DeviceRepo
    notifications: NotificationRepo
    deliveries: DeliveryQueue
    idempotency: IdempotencyRepo
    events: EventOutbox
    stream: StreamLog
    preferences: PreferenceRepo
    topics: TopicRepo
    broadcasts: BroadcastRepo


class Store(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """A read-write unit of work."""
        ...

    def reader(self) -> AbstractAsyncContextManager[Tx]:
        """A read-only view; writing through it is an error."""
        ...

    async def migrate(self) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


class Provider(Protocol):
    """A delivery channel's backend (FCM, APNs, Twilio, …) for one app's credentials.

    `send` takes a batch so that a provider can pipeline, multiplex or use a batch API; it
    returns one result per message, in order, and never raises for a per-message failure.
    """

    name: str
    max_concurrency: int

    async def send(self, messages: Sequence[OutboundMessage]) -> Sequence[SendResult]: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class WebhookAnswer:
    ok: bool
    error: str | None = None
    retry_after: float | None = None  # seconds, when the receiver said


class WebhookSender(Protocol):
    """POSTs one signed app event to the app's webhook URL."""

    async def send(self, url: str, secret: str, event_id: str, body: bytes) -> WebhookAnswer: ...
    async def close(self) -> None: ...


class HubSubscription(Protocol):
    app_id: str
    user_id: str


class Hub(Protocol):
    """Carries stream events from the process that committed them to every process holding a
    connection of that user (in process, or between API nodes). Best effort: a lost message
    is found again by the connection's sequence check, from the store, at the user's next
    event; a hub that knows it may have missed messages (it lost its connection) delivers a
    `domain.stream.RESYNC` marker to each subscriber once it is back, and the subscriber reads
    the store then."""

    async def start(self, on_kick: Callable[[Kick], None]) -> None:
        """Begin; `on_kick` is called on every node for every `kick`."""
        ...
    async def publish(self, events: Sequence[StreamEvent]) -> None: ...
    async def subscribe(self, app_id: str, user_id: str,
                        deliver: Callable[[StreamEvent], None]) -> HubSubscription:
        """Returns once every event published from now on reaches `deliver` (called on the
        event loop, never concurrently, and it must not block)."""
        ...
    async def unsubscribe(self, subscription: HubSubscription) -> None: ...
    async def kick(self, kick: Kick) -> None: ...
    async def close(self) -> None: ...


class ProviderFactory(Protocol):
    def __call__(self, name: str, config: dict[str, object]) -> Provider:
        """Build the named provider for one app's (decrypted) settings."""
        ...
