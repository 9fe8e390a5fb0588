"""The loop every background worker runs: a round of work, again at once while there was work,
else a wait for a wake-up, the stop, or the next poll; a chore on its own timer beside it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Chore:
    run: Callable[[], Awaitable[object]]
    every: float  # seconds between runs
    first_after: float = 0.0  # seconds from the start to the first run


async def poll(stop: asyncio.Event, round_: Callable[[], Awaitable[int]], *, interval: float,
               log: logging.Logger, what: str, wake: asyncio.Event | None = None,
               chore: Chore | None = None) -> None:
    loop = asyncio.get_running_loop()
    next_chore = loop.time() + (chore.first_after if chore else 0.0)
    while not stop.is_set():
        if chore is not None and loop.time() >= next_chore:
            next_chore = loop.time() + chore.every
            try:
                await chore.run()
            except Exception:
                log.exception("%s: housekeeping failed", what)
        try:
            handled = await round_()
        except Exception:
            log.exception("%s: a round failed; retrying shortly", what)
            handled = 0
            await asyncio.sleep(interval)  # not at once, even when a wake-up is set
        if handled:
            continue
        # A wake-up that came while the round ran is still set: the next round starts at once.
        # It is cleared only after waiting, never before.
        waiters = [asyncio.ensure_future(stop.wait())]
        if wake is not None:
            waiters.append(asyncio.ensure_future(wake.wait()))
        _, pending = await asyncio.wait(waiters, timeout=interval,
                                        return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if wake is not None:
            wake.clear()
