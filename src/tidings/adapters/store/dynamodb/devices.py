"""Devices on DynamoDB: each device lives in its owner's partition (so that a send reads a
user's devices with one Query), beside two small items that answer the other questions.

- the device, pk=`keys.user(app, user)`, sk=`keys.device_sk(id)`: every field;
- the token's lock, pk=`keys.token(app, token_key)`, sk=`T`: the device and user holding the
  token. It is written with `attribute_not_exists(pk)`: of two registrations of one token
  committing at once, one commits and the other gets StoreConflict, so a token always has
  exactly one owner (what the SQL store's unique index on (app, token_key) does);
- the pointer, pk=`keys.device(app, id)`, sk=`P`: the owner of a device id, for `get`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ....domain.devices import Device
from . import keys
from .codec import Item, at_us, decode, encode, us
from .unit import Unit, gather_bounded

LOCK = "T"
POINTER = "P"
PAIRED = "token is already paired"
# Queries in flight at once for one `for_users` (a send to many users at a time).


def device_item(d: Device) -> Item:
    return encode({
        "pk": keys.user(d.app_id, d.user_id), "sk": keys.device_sk(d.id),
        "id": d.id, "app_id": d.app_id, "user_id": d.user_id, "platform": d.platform,
        "token": d.token, "token_key": d.token_key, "provider": d.provider,
        "enabled": d.enabled, "device_info": d.device_info, "app_version": d.app_version,
        "created_at": us(d.created_at), "last_seen_at": us(d.last_seen_at),
        "disabled_reason": d.disabled_reason, "provider_ref": d.provider_ref})


def device_of(item: Item) -> Device:
    v = decode(item)
    created, seen = at_us(v["created_at"]), at_us(v["last_seen_at"])
    assert created is not None and seen is not None
    return Device(
        id=v["id"], app_id=v["app_id"], user_id=v["user_id"], platform=v["platform"],
        token=v["token"], token_key=v["token_key"], provider=v.get("provider"),
        enabled=bool(v.get("enabled", True)), device_info=v.get("device_info"),
        app_version=v.get("app_version"), created_at=created, last_seen_at=seen,
        disabled_reason=v.get("disabled_reason"), provider_ref=v.get("provider_ref"))


def _lock_item(d: Device) -> Item:
    return encode({"pk": keys.token(d.app_id, d.token_key), "sk": LOCK, "app_id": d.app_id,
                   "device_id": d.id, "user_id": d.user_id})


def _pointer_item(d: Device) -> Item:
    return encode({"pk": keys.device(d.app_id, d.id), "sk": POINTER, "app_id": d.app_id,
                   "device_id": d.id, "user_id": d.user_id})


_HELD_BY = "device_id = :device"
_NEW = "attribute_not_exists(pk)"


class DynamoDevices:
    def __init__(self, unit: Unit) -> None:
        self._u = unit

    async def _owner(self, app_id: str, device_id: str) -> str | None:
        pointer = await self._u.get(keys.device(app_id, device_id), POINTER)
        return None if pointer is None else str(pointer["user_id"]["S"])

    async def get(self, app_id: str, device_id: str) -> Device | None:
        owner = await self._owner(app_id, device_id)
        if owner is None:
            return None
        item = await self._u.get(keys.user(app_id, owner), keys.device_sk(device_id))
        return None if item is None else device_of(item)

    async def by_token(self, app_id: str, token_key: str) -> Device | None:
        lock = await self._u.get(keys.token(app_id, token_key), LOCK)
        if lock is None:
            return None
        item = await self._u.get(keys.user(app_id, lock["user_id"]["S"]),
                                 keys.device_sk(lock["device_id"]["S"]))
        if item is None:
            return None
        found = device_of(item)
        return found if found.token_key == token_key else None

    async def for_user(self, app_id: str, user_id: str) -> list[Device]:
        # Sort keys are `DEV#<id>`: the partition's order is the id order SQL sorts by.
        return [device_of(i) async for i in self._u.table.query_all(
            keys.user(app_id, user_id), sk_prefix=keys.device_sk(""))]

    async def for_users(self, app_id: str, user_ids: Sequence[str]) -> dict[str, list[Device]]:
        unique = list(dict.fromkeys(user_ids))
        found = await gather_bounded(lambda u: self.for_user(app_id, u), unique)
        return dict(zip(unique, found, strict=True))

    def _take_token(self, d: Device) -> None:
        """Put the token's lock for `d`: only if nobody holds the token, or if this unit
        releases it (a registration moving a token from one device to another deletes the
        old device and its lock first: the lock is then rewritten, on the condition the delete
        had, that it is still held by the device this unit removed)."""
        pk = keys.token(d.app_id, d.token_key)
        earlier = self._u.pending(pk, LOCK)
        if earlier is not None and earlier.kind == "Delete" and "ConditionExpression" in earlier.request:
            self._u.put(_lock_item(d), condition=earlier.request["ConditionExpression"],
                        values=earlier.request.get("ExpressionAttributeValues"),
                        names=earlier.request.get("ExpressionAttributeNames"), conflict=PAIRED)
        else:
            self._u.put(_lock_item(d), condition=_NEW, conflict=PAIRED)

    def _release_token(self, app_id: str, token_key: str, device_id: str) -> None:
        self._drop(keys.token(app_id, token_key), LOCK, _HELD_BY, {":device": {"S": device_id}})

    def _drop(self, pk: str, sk: str, condition: str | None = None,
              values: dict[str, Any] | None = None) -> None:
        """Delete an item. One this unit itself created is taken back instead: nothing was
        there before it, and nothing may be deleted in its place."""
        earlier = self._u.pending(pk, sk)
        if earlier is not None and earlier.request.get("ConditionExpression") == _NEW:
            self._u.delete(pk, sk, condition=_NEW)
        else:
            self._u.delete(pk, sk, condition=condition, values=values, conflict=PAIRED)

    async def add(self, device: Device) -> None:
        self._take_token(device)
        self._u.put_again(device_item(device), condition=_NEW,
                          conflict=f"device {device.id} exists")
        self._u.put(_pointer_item(device), condition=_NEW, conflict=f"device {device.id} exists")

    async def update(self, device: Device) -> None:
        """Store the device as given; it may have moved to another user (its item moves to
        that user's partition) or taken another token (the old lock goes, the new one is
        taken as `add` takes it). A device deleted meanwhile stays deleted, as in SQL."""
        old = await self.get(device.app_id, device.id)
        if old is None:
            return
        moved = old.user_id != device.user_id
        if moved:
            self._drop(keys.user(old.app_id, old.user_id), keys.device_sk(old.id))
            self._u.put_again(device_item(device), condition=_NEW,
                              conflict=f"device {device.id} exists")
            self._u.put_again(_pointer_item(device), condition="user_id = :old",
                              values={":old": {"S": old.user_id}},
                              conflict=f"device {device.id} changed meanwhile")
        else:
            self._u.put_again(device_item(device), condition="attribute_exists(pk)",
                              conflict=f"device {device.id} was deleted meanwhile")
        if old.token_key != device.token_key:
            lock = await self._u.get(keys.token(old.app_id, old.token_key), LOCK)
            if lock is not None and lock["device_id"]["S"] == old.id:
                self._release_token(old.app_id, old.token_key, old.id)
            self._take_token(device)
        elif moved:  # same token, new owner: the lock names the owner too
            self._u.put_again(_lock_item(device), condition=_HELD_BY,
                              values={":device": {"S": device.id}}, conflict=PAIRED)

    async def delete(self, app_id: str, device_id: str) -> bool:
        found = await self.get(app_id, device_id)
        if found is None:
            return False
        self._drop(keys.user(app_id, found.user_id), keys.device_sk(device_id))
        self._drop(keys.device(app_id, device_id), POINTER)
        lock = await self._u.get(keys.token(app_id, found.token_key), LOCK)
        if lock is not None and lock["device_id"]["S"] == device_id:
            self._release_token(app_id, found.token_key, device_id)
        return True


def device_keys(d: Device) -> list[tuple[str, str]]:
    """Every item of a device (for the deletion of a user or an app)."""
    return [(keys.user(d.app_id, d.user_id), keys.device_sk(d.id)),
            (keys.device(d.app_id, d.id), POINTER), (keys.token(d.app_id, d.token_key), LOCK)]


__all__ = ["DynamoDevices", "device_item", "device_keys", "device_of"]
