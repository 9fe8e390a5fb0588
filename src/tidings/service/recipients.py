"""What a send needs to know about its recipients, read in one go for a batch of users:
devices, profile (addresses, timezone, quiet hours) and preferences."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, time

from ..domain.notifications import Channel
from ..domain.planning import Recipient
from ..domain.preferences import Preferences
from ..domain.schedule import next_local
from ..domain.targeting import AppRules
from ..domain.users import User
from ..ports import Tx


def recipient(user_id: str, profile: User | None, devices: Iterable[object],
              prefs: Mapping[str, object] | None) -> Recipient:
    return Recipient(
        user_id=user_id,
        phone=profile.phone if profile else None,
        email=profile.email if profile else None,
        devices=tuple(devices),  # type: ignore[arg-type]
        email_undeliverable=(profile.email_undeliverable_reason or "bounced")
        if profile and profile.email_undeliverable_at else None,
        preferences=Preferences.from_doc(prefs) if prefs else None,
        quiet_hours=profile.quiet_hours if profile else None,
        timezone=profile.timezone if profile else None,
    )


async def load(tx: Tx, app_id: str, user_ids: Sequence[str], channels: Iterable[str],
               profiles: Mapping[str, User] | None = None) -> list[Recipient]:
    """Recipients for `user_ids` (in that order), users without a profile included.
    `profiles` saves the read when the caller has them already."""
    devices = (await tx.devices.for_users(app_id, user_ids)
               if Channel.PUSH in channels else {})
    if profiles is None:
        profiles = await tx.users.get_many(app_id, user_ids)
    prefs = await tx.preferences.get_many(app_id, user_ids)
    return [recipient(uid, profiles.get(uid), devices.get(uid, ()), prefs.get(uid))
            for uid in user_ids]


def send_time(when: datetime | time | None, r: Recipient, rules: AppRules,
              now: datetime) -> datetime | None:
    """When this recipient's notification goes: `when` itself, or for a local time the next
    such time in the recipient's timezone (else the app's, else UTC)."""
    if isinstance(when, time):
        return next_local(now, when, rules.zone(r.timezone))
    return when
