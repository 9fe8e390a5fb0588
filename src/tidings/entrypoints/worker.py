"""`tidings worker`: the delivery engine alone, for the cluster mode (any number of them)."""

from __future__ import annotations

import asyncio
import logging
import signal

from ..bootstrap import Container

log = logging.getLogger("tidings.worker")


async def run_worker(container: Container) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await container.run_workers(stop)
    finally:
        await container.close()
