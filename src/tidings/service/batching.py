"""Group commit: concurrent requests share one write transaction.

The first caller to find no flush under way becomes the leader and writes everything queued,
then whatever queued meanwhile, until the queue is empty. Under load a transaction carries many
requests' rows (one multi-row INSERT instead of many), with no timer and no added latency when
idle. If a batch fails on a uniqueness rule, its items are written one by one so that only the
offender fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from ..domain.errors import StoreConflict

T = TypeVar("T")


class GroupCommit(Generic[T]):
    def __init__(self, write: Callable[[Sequence[T]], Awaitable[None]], max_batch: int = 256) -> None:
        self._write = write
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._flushing = False
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._flushing:
            # The flush runs as its own task: a caller that is cancelled must not strand the
            # other callers' rows.
            self._flushing = True
            self._task = asyncio.create_task(self._run())
        await future

    async def _run(self) -> None:
        try:
            await self._flush()
        finally:
            self._flushing = False

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            try:
                await self._write([item for item, _ in batch])
            except StoreConflict as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                for item, future in batch:
                    try:
                        await self._write([item])
                    except Exception as one:  # noqa: BLE001 - handed to that caller
                        _settle(future, one)
                    else:
                        _settle(future, None)
                continue
            except BaseException as exc:
                for _, future in batch:
                    _settle(future, exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                if not isinstance(exc, Exception):
                    raise
                continue
            for _, future in batch:
                _settle(future, None)


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
