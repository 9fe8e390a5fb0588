"""Idempotency-Key handling shared by every creating request.

The answer is stored in the same unit of work as what the request created, so a replay can
never point at something that was rolled back, and a concurrent twin loses cleanly.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..domain.errors import IdempotencyMismatch, IdempotencyRace, StoreConflict, ValidationFailed
from ..domain.idempotency import MAX_KEY_LENGTH, IdempotencyClaim
from ..ports import Clock, Store, Tx
from .secrets import SecretBox

R = TypeVar("R")
# Rounds of a unit of work that lost a race on a uniqueness rule (see `run`).
CONFLICT_ATTEMPTS = 8
_SEALED = b"sealed:"
Rendered = tuple[int, bytes]


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: bytes


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: bytes
    replayed: bool


class Idempotency:
    def __init__(self, store: Store, clock: Clock, box: SecretBox) -> None:
        self._store = store
        self._clock = clock
        self._box = box

    async def check(self, scope: str, key: str, fingerprint: str) -> Replay | IdempotencyClaim:
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
            raise ValidationFailed.on("Idempotency-Key", f"must be 1-{MAX_KEY_LENGTH} printable characters")
        async with self._store.reader() as tx:
            record = await tx.idempotency.get(scope, key)
        if record is None or record.expires_at <= self._clock.now():
            return IdempotencyClaim(scope, key, fingerprint)
        if record.fingerprint != fingerprint:
            raise IdempotencyMismatch(
                "this Idempotency-Key was used with a different request; use a new key")
        body = record.body
        if body.startswith(_SEALED):
            body = self._box.open(body[len(_SEALED):].decode()).encode()
        return Replay(record.status_code, body)

    async def run(self, claim: IdempotencyClaim | None, action: Callable[[Tx], Awaitable[R]],
                  render: Callable[[R], Rendered], *, sensitive: bool = False) -> Answer:
        """Run `action` in one unit of work and, under a claim, store its rendered answer
        with it. A twin that committed first turns this run into a replay of its answer.
        A `sensitive` answer (one that shows a secret once) is stored encrypted."""
        try:
            for attempt in range(CONFLICT_ATTEMPTS):
                try:
                    async with self._store.transaction() as tx:
                        result = await action(tx)
                        status, body = render(result)
                        if claim is not None:
                            stored = (_SEALED + self._box.seal(body.decode()).encode()
                                      if sensitive else body)
                            await tx.idempotency.put(claim.record(status, stored, self._clock.now()))
                    return Answer(status, body, False)
                except IdempotencyRace:
                    raise
                except StoreConflict:
                    # Lost a race on a uniqueness rule (two registrations of one token): run
                    # again, now seeing the winner's row. A store that checks such rules
                    # optimistically (DynamoDB) lets one of N racers win each round.
                    if attempt == CONFLICT_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(random.uniform(0, 0.004 * (attempt + 1)))
            raise AssertionError("unreachable")
        except IdempotencyRace:
            assert claim is not None
            again = await self.check(claim.scope, claim.key, claim.fingerprint)
            if isinstance(again, Replay):
                return Answer(again.status_code, again.body, True)
            raise
