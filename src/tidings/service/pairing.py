"""Pairing devices with users (API.md, Devices, rules 1-4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..domain.devices import (
    Device,
    PairingAction,
    canonical_token,
    decide_pairing,
    token_key,
)
from ..domain.errors import NotFound, StoreConflict
from ..domain.ids import new_id
from ..ports import Clock, Store, Tx


@dataclass(frozen=True)
class Registration:
    platform: str
    token: str | dict[str, Any]
    provider: str | None = None
    device_info: str | None = None
    app_version: str | None = None
    device_id: str | None = None


class Pairing:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def register(self, tx: Tx, app_id: str, user_id: str,
                       reg: Registration) -> tuple[Device, bool]:
        """Register or refresh within `tx`; True when a new device row was created.

        A race with another registration of the same token surfaces as StoreConflict from the
        unique (app, token) rule; the caller retries and this time sees the winner's row.
        """
        now = self._clock.now()
        key = token_key(reg.token)
        by_token = await tx.devices.by_token(app_id, key)
        by_id = None
        if reg.device_id is not None:
            found = await tx.devices.get(app_id, reg.device_id)
            by_id = found if found is not None and found.user_id == user_id else None
        decision = decide_pairing(user_id, by_token, by_id)
        await tx.users.ensure(app_id, user_id, now)
        if decision.remove is not None:
            await tx.devices.delete(app_id, decision.remove.id)
        if decision.action is PairingAction.CREATE:
            created = Device(
                id=new_id(), app_id=app_id, user_id=user_id, platform=reg.platform,
                token=canonical_token(reg.token), token_key=key, provider=reg.provider,
                enabled=True, device_info=reg.device_info, app_version=reg.app_version,
                created_at=now, last_seen_at=now,
            )
            await tx.devices.add(created)
            return created, True
        assert decision.device is not None
        device = decision.device
        if (not device.enabled or device.token_key != key or device.user_id != user_id
                or device.platform != reg.platform):
            # The provider's reference (an SNS endpoint) may be stale: it is checked afresh.
            device.provider_ref = None
        device.user_id = user_id
        device.platform = reg.platform
        device.token = canonical_token(reg.token)
        device.token_key = key
        device.provider = reg.provider
        device.enabled = True  # rule 4: registering again is what re-enables
        device.disabled_reason = None
        device.last_seen_at = now
        if reg.device_info is not None:
            device.device_info = reg.device_info
        if reg.app_version is not None:
            device.app_version = reg.app_version
        await tx.devices.update(device)
        return device, False

    async def list(self, app_id: str, user_id: str) -> list[Device]:
        async with self._store.reader() as tx:
            return await tx.devices.for_user(app_id, user_id)

    async def delete(self, app_id: str, user_id: str, device_id: str) -> None:
        async with self._store.transaction() as tx:
            device = await tx.devices.get(app_id, device_id)
            if device is None or device.user_id != user_id:
                raise NotFound(f"device {device_id} not found")
            await tx.devices.delete(app_id, device_id)


__all__ = ["Pairing", "Registration", "StoreConflict"]
