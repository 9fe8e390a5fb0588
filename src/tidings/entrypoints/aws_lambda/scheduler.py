"""`tidings.entrypoints.aws_lambda.scheduler.handler`: the background work of the AWS mode,
started by EventBridge every minute (`rate(1 minute)`).

EventBridge cannot start a function more often than once a minute, and a scheduled notification
should go within a second of its time, so each invocation stays for (almost) the minute and
polls, as `tidings worker` does: scheduled notifications that came due, broadcasts to expand,
app events for the apps' webhooks -- each in its own loop, again at once while it finds work,
else after 0.25 s. The next invocation starts as this one ends (a minute apart, each staying
up to 55 s, at most 5 s less than the time Lambda gives it). Housekeeping (expired idempotency
records, old stream events and app events) runs once per invocation, beside them.

Two invocations that overlap (a slow one, a retried one) do no harm: each round claims its
work under a lease, as several workers do. A round still running at the end is cut off: what it
had leased is taken over when its lease expires.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import events, outbox, runtime

if TYPE_CHECKING:
    from ...bootstrap import Container
    from .runtime import Runtime

log = logging.getLogger("tidings.lambda")

MAX_SECONDS = 55.0
RESERVE_SECONDS = 5.0  # left to Lambda after the loops: the summary, the logs
CUT_OFF_SECONDS = 1.5  # a round still running this close to the end is cancelled
INTERVAL = 0.25
# A pending delivery this far past its time has lost its queue message (see `requeue`).
OVERDUE = timedelta(minutes=10)
REQUEUE_LIMIT = 500


def budget(context: Any) -> tuple[float, float]:
    """(seconds to keep starting rounds, seconds after which a running round is cut off).
    Without a context that says (a local run), a whole minute's worth."""
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    remaining = (remaining_ms() / 1000.0 if remaining_ms is not None
                 else MAX_SECONDS + RESERVE_SECONDS)
    return (max(0.0, min(MAX_SECONDS, remaining - RESERVE_SECONDS)),
            max(0.0, remaining - CUT_OFF_SECONDS))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    rt = runtime.current()
    with rt.invocation("scheduler", context):
        events.checked(events.scheduled, event)
        polling, hard = budget(context)
        return rt.run(run(rt, polling, hard))


async def run(rt: Runtime, polling: float, hard: float) -> dict[str, Any]:
    container = await rt.container()
    loop = asyncio.get_running_loop()
    started = loop.time()
    until = started + polling
    summary: dict[str, Any] = {"scheduled": 0, "broadcast_recipients": 0, "webhook_events": 0,
                               "rounds": 0, "errors": 0, "housekeeping": "ok", "cut_off": False}

    async def keep(name: str, round_: Callable[[], Awaitable[int]]) -> None:
        # One round at least, even with no time left: the minute's due work must not wait
        # for the next invocation.
        while True:
            try:
                handled = await round_()
            except Exception:
                log.exception("%s: a round failed", name)
                summary["errors"] += 1
                handled = 0
            summary["rounds"] += 1
            summary[name] += handled
            left = until - loop.time()
            if left <= 0:
                return
            if not handled:
                await asyncio.sleep(min(INTERVAL, left))

    async def housekeeping() -> None:
        try:
            await _housekeeping(container)
            summary["requeued"] = await requeue(rt)
        except Exception:
            log.exception("housekeeping failed")
            summary["housekeeping"] = "failed"

    work = asyncio.gather(
        keep("scheduled", container.scheduler.fire_due),
        keep("broadcast_recipients", container.broadcasts.run_once),
        keep("webhook_events", container.event_dispatcher.run_once),
        housekeeping())
    try:
        await asyncio.wait_for(work, timeout=max(0.1, hard - (loop.time() - started)))
    except TimeoutError:
        summary["cut_off"] = True
        log.warning("rounds still running at the end of the invocation were cut off")
    summary["seconds"] = round(loop.time() - started, 3)
    log.info("scheduler: %d scheduled sent, %d broadcast recipients, %d webhook events",
             summary["scheduled"], summary["broadcast_recipients"], summary["webhook_events"],
             extra={"fields": summary})
    return summary


async def requeue(rt: Runtime) -> int:
    """Queue again the deliveries overdue by more than OVERDUE: their message was lost (it
    went to the dead-letter queue after too many receives, or the outbox gave up on its
    batch), and on AWS nothing else would ever take them. A delivery queued twice is sent
    once: the worker takes it under a lease."""
    container = await rt.container()
    if container.settings.queue_url is None:
        return 0
    before = rt.clock.now() - OVERDUE
    async with container.store.reader() as tx:
        overdue = getattr(tx.deliveries, "overdue", None)
        if overdue is None:  # a store whose deliveries are polled, not queued
            return 0
        ids = await overdue(before, REQUEUE_LIMIT)
    if not ids:
        return 0
    await outbox.send_all(await rt.sqs(), rt.queue_url(),
                          [outbox.message(a, n, d) for a, n, d in ids])
    log.warning("queued again %d deliveries overdue by more than %s", len(ids), OVERDUE)
    return len(ids)


async def _housekeeping(container: Container) -> None:
    began = time.monotonic()
    await container.dispatcher.housekeeping()
    purged = await container.event_dispatcher.purge()
    log.info("housekeeping done in %.2f s (%d old app events forgotten)",
             time.monotonic() - began, purged)
