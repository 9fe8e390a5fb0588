"""Accepting sends: resolve the recipients, plan one notification per recipient with one
delivery per target, and write them all (the outbox) in one transaction. Nothing is sent here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time

from ..domain.apps import App
from ..domain.errors import IdempotencyRace, ValidationFailed
from ..domain.idempotency import IdempotencyClaim, IdempotencyRecord
from ..domain.notifications import Channel, DeliveryStatus, Message, Notification
from ..domain.planning import Recipient, plan_notification
from ..domain.targeting import AppRules
from ..ports import Clock, Store
from . import recipients as recipients_
from .batching import GroupCommit
from .idempotency import Answer, Idempotency, Replay
from .stream import Streams

MAX_USER_IDS = 1000
Render = Callable[[list[Notification]], tuple[int, bytes]]


@dataclass(frozen=True)
class Audience:
    user_ids: tuple[str, ...] = ()
    phone: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class _Write:
    notifications: list[Notification]
    record: IdempotencyRecord | None


class Sender:
    def __init__(self, store: Store, clock: Clock, idempotency: Idempotency,
                 on_queued: Callable[[], None] = lambda: None, max_batch: int = 256,
                 streams: Streams | None = None) -> None:
        self._store = store
        self._streams = streams
        self._clock = clock
        self._idempotency = idempotency
        self._on_queued = on_queued
        self._writer: GroupCommit[_Write] = GroupCommit(self._write, max_batch)

    async def _write(self, writes: Sequence[_Write]) -> None:
        items = [n for w in writes for n in w.notifications]
        async with self._store.transaction() as tx:
            await tx.notifications.add_many(items)
            for w in writes:
                if w.record is not None:
                    await tx.idempotency.put(w.record)
            events = await self._streams.created(tx, items) if self._streams else []
        if events:
            assert self._streams is not None
            await self._streams.publish(events)

    async def recipients(self, app: App, audience: Audience, channels: Sequence[str]) -> list[Recipient]:
        if not audience.user_ids:
            return [Recipient(phone=audience.phone, email=audience.email)]
        ids = list(dict.fromkeys(audience.user_ids))
        if len(ids) > MAX_USER_IDS:
            raise ValidationFailed.on("to.user_ids", f"at most {MAX_USER_IDS} users per request")
        async with self._store.reader() as tx:
            return await recipients_.load(tx, app.id, ids, channels)

    async def send(self, app: App, audience: Audience, message: Message,
                   claim: IdempotencyClaim | None, render: Render,
                   when: datetime | time | None = None) -> Answer:
        """`when`: an instant (already checked), a local time of each recipient's day, or now."""
        if not audience.user_ids:
            allowed = {Channel.SMS} if audience.phone else {Channel.EMAIL}
            wrong = [c for c in message.channels if c not in allowed]
            if wrong:
                raise ValidationFailed.on(
                    "channels", f"sending to a raw address allows only {sorted(allowed)}, not {wrong}")
        now = self._clock.now()
        # A scheduled send plans its deliveries when it goes: its devices are not needed now.
        recipients = await self.recipients(app, audience,
                                           message.channels if when is None else ())
        rules = AppRules.of(app.defaults)
        items = [plan_notification(app, r, message, now, rules,
                                   send_at=recipients_.send_time(when, r, rules, now))
                 for r in recipients]
        status, body = render(items)
        record = claim.record(status, body, now) if claim is not None else None
        try:
            await self._writer.submit(_Write(items, record))
        except IdempotencyRace:
            assert claim is not None
            again = await self._idempotency.check(claim.scope, claim.key, claim.fingerprint)
            if isinstance(again, Replay):
                return Answer(again.status_code, again.body, True)
            raise
        if any(d.status == DeliveryStatus.PENDING for n in items for d in n.deliveries):
            self._on_queued()
        return Answer(status, body, False)
