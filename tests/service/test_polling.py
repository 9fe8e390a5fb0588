"""The background loop: rounds while there is work, a wake-up starts the next at once, a
failing round or chore is logged and the loop goes on, the stop ends it."""

from __future__ import annotations

import asyncio
import logging

from tidings.service.polling import Chore, poll

log = logging.getLogger("test.polling")


async def test_rounds_wake_failures_chores_and_stop() -> None:
    stop, wake = asyncio.Event(), asyncio.Event()
    work = [3, 0]  # two rounds' worth, then idle
    calls: list[str] = []

    failures = [RuntimeError("the store went away")]

    async def round_() -> int:
        calls.append("round")
        if failures:
            raise failures.pop()
        return work.pop(0) if work else 0

    async def chore() -> None:
        calls.append("chore")
        raise RuntimeError("chores fail too")

    task = asyncio.create_task(poll(stop, round_, interval=60, log=log, what="test", wake=wake,
                                    chore=Chore(chore, every=3600)))
    await asyncio.sleep(0.05)
    assert calls == ["chore", "round"]  # the failed round waits before the next
    task.cancel()
    calls.clear()
    task = asyncio.create_task(poll(stop, round_, interval=60, log=log, what="test", wake=wake))
    await asyncio.sleep(0.05)
    assert calls == ["round", "round"]  # 3 handled: again at once; 0: waits for a minute
    wake.set()
    await asyncio.sleep(0.05)
    assert calls == ["round", "round", "round"] and not wake.is_set()
    stop.set()
    await asyncio.wait_for(task, 1)
