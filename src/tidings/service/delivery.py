"""The delivery engine: claim due deliveries under a lease, hand them to their providers in
batches, record what happened. At-least-once: a worker that dies leaves leases that expire,
and its deliveries are claimed again."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence

from ..domain.delivery import Claim, Failed, Outcome, Retry, SendResult, decide
from ..domain.errors import NotConfigured
from ..domain.ids import new_id
from ..domain.notifications import DeliveryStatus
from ..domain.retry import RetryPolicy
from ..ports import Clock, Store
from .events import Events
from .polling import Chore, poll
from .providers import ProviderPool

log = logging.getLogger("tidings.worker")


class Dispatcher:
    def __init__(self, store: Store, clock: Clock, providers: ProviderPool, policy: RetryPolicy,
                 *, batch_size: int = 500, lease_seconds: float = 60.0,
                 poll_interval: float = 0.5, events: Events | None = None,
                 lanes: int = 2,
                 housekeeping: Sequence[Callable[[], Awaitable[object]]] = ()) -> None:
        self._lanes = max(1, lanes)
        self._chores = tuple(housekeeping)
        self._events = events
        self._store = store
        self._clock = clock
        self._providers = providers
        self._policy = policy
        self._batch = batch_size
        self._lease = lease_seconds
        self._poll = poll_interval
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """New work was queued in this process: no need to wait for the next poll."""
        self._wake.set()

    async def run_once(self) -> int:
        """Claim one batch, send it, record it. Returns how many deliveries were handled."""
        lease_id = new_id()
        async with self._store.transaction() as tx:
            claims = await tx.deliveries.claim(self._clock.now(), self._batch, self._lease, lease_id)
        if not claims:
            return 0
        await self.deliver(claims)
        return len(claims)

    async def deliver(self, claims: Sequence[Claim]) -> list[Outcome]:
        """Send deliveries claimed under a lease and record what became of them. The pollers
        claim from the store; the serverless worker claims what its queue handed it."""
        groups: dict[tuple[str, str], list[Claim]] = defaultdict(list)
        outcomes: list[Outcome] = []
        for claim in claims:
            now = self._clock.now()
            if claim.message is None:
                outcomes.append(Outcome(claim.delivery_id, claim.notification_id, claim.lease_id,
                                        DeliveryStatus.SKIPPED, now, None,
                                        error="the device was removed or disabled"))
            elif claim.attempts > self._policy.max_attempts:
                # Only expired leases get here: a worker died holding it, again and again.
                outcomes.append(decide(claim, Failed(
                    f"lease expired after {claim.attempts - 1} attempts"), self._policy, now))
            else:
                groups[(claim.app_id, claim.provider)].append(claim)
        sent = await asyncio.gather(*(self._send(app_id, name, group)
                                      for (app_id, name), group in groups.items()))
        for batch in sent:
            outcomes.extend(batch)
        events = await self._events.for_outcomes(claims, outcomes) if self._events else []
        async with self._store.transaction() as tx:
            await tx.deliveries.record(outcomes)
            if events:
                await tx.events.add(events)
        return outcomes

    async def _send(self, app_id: str, name: str, claims: Sequence[Claim]) -> list[Outcome]:
        results: Sequence[SendResult]
        try:
            provider = await self._providers.get(app_id, name)
            async with self._providers.limit(name):
                results = await provider.send([c.message for c in claims if c.message])
            if len(results) != len(claims):
                raise RuntimeError(f"provider {name} returned {len(results)} results "
                                   f"for {len(claims)} messages")
        except NotConfigured as exc:
            results = [Failed(str(exc))] * len(claims)
        except Exception as exc:
            log.exception("provider %s failed on a batch of %d", name, len(claims))
            results = [Retry(f"provider error: {type(exc).__name__}")] * len(claims)
        now = self._clock.now()
        return [decide(c, r, self._policy, now) for c, r in zip(claims, results, strict=True)]

    async def housekeeping(self) -> None:
        """Forget idempotency records past their 24 hours, then run the other clean-ups the
        worker was given (each on its own: one failing does not stop the next)."""
        async with self._store.transaction() as tx:
            purged = await tx.idempotency.purge(self._clock.now())
        if purged:
            log.info("purged %d expired idempotency records", purged)
        for chore in self._chores:
            try:
                await chore()
            except Exception:
                log.exception("housekeeping %s failed; trying again later",
                              getattr(chore, "__qualname__", chore))

    async def run(self, stop: asyncio.Event, housekeeping_every: float = 600.0) -> None:
        """`lanes` rounds in flight at once: while one batch waits on its providers, another is
        claimed or recorded (leases keep them apart, as between workers)."""
        log.info("delivery worker started (%d lanes)", self._lanes)
        chore = Chore(self.housekeeping, housekeeping_every)
        await asyncio.gather(*(poll(stop, self.run_once, interval=self._poll, log=log,
                                    what="delivery worker", wake=self._wake,
                                    chore=chore if i == 0 else None)
                               for i in range(self._lanes)))
        log.info("delivery worker stopped")
