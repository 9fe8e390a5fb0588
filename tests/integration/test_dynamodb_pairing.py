"""Pairing on DynamoDB (moto in server mode, over loopback): a token has exactly one owner even
when two users register it at the same moment.

DynamoDB has no unique index; the store keeps one lock item per token, written on the
condition that it does not exist. Both registrations here read "nobody holds this token"
before either writes (a barrier holds each at its write until both have read), so both decide
to create a device, and only the commit can tell them apart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.fakes.clock import FakeClock
from tidings.domain.devices import token_key
from tidings.domain.errors import StoreConflict
from tidings.service.pairing import Pairing, Registration

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
ROUNDS = 20


@pytest.fixture
def backend() -> str:
    return "dynamodb"


async def _register_at_once(store: Any, token: str) -> list[BaseException | None]:
    """Two users register `token` in two concurrent transactions, both having looked the
    token up before either writes."""
    pairing = Pairing(store, FakeClock(NOW))
    both_read = asyncio.Barrier(2)

    async def register(user_id: str) -> None:
        async with store.transaction() as tx:
            add = tx.devices.add

            async def add_after_both_read(device: Any) -> None:
                await both_read.wait()
                await add(device)

            tx.devices.add = add_after_both_read
            await pairing.register(tx, "acme", user_id, Registration("android", token))

    results = await asyncio.gather(register("alice"), register("bob"), return_exceptions=True)
    return list(results)


async def test_two_users_registering_one_token_at_once_leave_one_owner(store: Any) -> None:
    for round_ in range(ROUNDS):
        token = f"fcm-token-{round_}"
        results = await _register_at_once(store, token)
        failed = [r for r in results if r is not None]
        assert len(failed) == 1, results
        assert isinstance(failed[0], StoreConflict), failed[0]
        winner = ("alice", "bob")[results.index(None)]
        loser = ("alice", "bob")[1 - results.index(None)]
        async with store.reader() as tx:
            owner = await tx.devices.by_token("acme", token_key(token))
            by_user = await tx.devices.for_users("acme", [winner, loser])
        assert owner is not None and owner.user_id == winner and owner.token == token
        assert [d.id for d in by_user[winner] if d.token == token] == [owner.id]
        assert [d for d in by_user[loser] if d.token == token] == []
        async with store.reader() as tx:
            assert (await tx.devices.get("acme", owner.id)) == owner


async def test_the_loser_registering_again_takes_the_token_over(store: Any) -> None:
    """What the caller does on StoreConflict: it retries, sees the winner's device, and the
    token moves to it (rule 2): still one owner, and one device."""
    results = await _register_at_once(store, "fcm-token")
    loser = ("alice", "bob")[[r is None for r in results].index(False)]
    pairing = Pairing(store, FakeClock(NOW))
    async with store.transaction() as tx:
        moved, created = await pairing.register(tx, "acme", loser, Registration("android", "fcm-token"))
    assert not created
    async with store.reader() as tx:
        owner = await tx.devices.by_token("acme", token_key("fcm-token"))
        by_user = await tx.devices.for_users("acme", ["alice", "bob"])
        pointed = await tx.devices.get("acme", moved.id)
    assert owner is not None and owner.user_id == loser and owner.id == moved.id
    assert [d.id for d in by_user[loser]] == [moved.id]
    assert [d.id for ds in by_user.values() for d in ds] == [moved.id]
    assert pointed is not None and pointed.user_id == loser
