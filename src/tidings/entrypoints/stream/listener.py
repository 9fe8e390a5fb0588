"""One open stream (a WebSocket or an event-stream response): the events waiting for it, in
order, without duplicates, holes filled from the store, and why it must close.

Kept small on purpose: a server holds tens of thousands of these, so there are no tasks, queues
or events per stream here, only a list and, while the stream waits, one future.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ...domain.stream import (
    CLOSE_TOO_SLOW,
    CLOSE_TRY_LATER,
    RESET_REASON,
    RESYNC,
    Position,
    Step,
    StreamEvent,
)
from ...service.stream import Opened, Streams
from . import frames

log = logging.getLogger("tidings.stream")

# What a stream writes: (event id or None, text). Text "" with no id is a heartbeat.
Frame = tuple[str | None, str]
HEARTBEAT: Frame = (None, "")


class Listener:
    __slots__ = (
        "_extra",
        "_max",
        "_pending",
        "_resync",
        "_streams",
        "_waiter",
        "_writer",
        "app_id",
        "cancelled_writer",
        "closing",
        "direct",
        "expires_at",
        "key_id",
        "position",
        "sending",
        "user_id",
    )

    def __init__(self, streams: Streams, app_id: str, user_id: str, key_id: str | None,
                 expires_at: float | None, max_events: int) -> None:
        self.app_id = app_id
        self.user_id = user_id
        self.key_id = key_id
        self.expires_at = expires_at
        self.position = Position(0)
        self.closing: tuple[int, str] | None = None
        self.sending = False  # the writer is inside a send (which waits on a slow client)
        self.cancelled_writer = False  # close() cancelled that send
        self._streams = streams
        self._max = max_events
        self._pending: list[StreamEvent] | None = None
        self._extra: list[Frame] | None = None
        self._resync = False  # the hub may have missed events: compare with the store
        self._waiter: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[object] | None = None
        # Writes frames at once if the connection can take them without waiting (see deliver).
        self.direct: Callable[[bytes], bool] | None = None

    # -- fed by the hub and the registry (synchronous, on the loop) -----------------------
    def deliver(self, ev: StreamEvent) -> None:
        if self.closing is not None:
            return
        if ev.type == RESYNC:
            self._resync = True
            self._wake()
            return
        waiter = self._waiter
        if (self.direct is not None and waiter is not None and not waiter.done()
                and not self._pending and not self._extra
                and self.position.step(ev.seq) is Step.SEND
                and self.direct(frames.ws_pair(ev))):
            # The writer is idle and the client keeps up: written here, no task woken.
            self.position.seq = ev.seq
            return
        pending = self._pending
        if pending is None:
            pending = self._pending = []
        elif len(pending) >= self._max:
            self.close(CLOSE_TOO_SLOW, f"more than {self._max} events waited for the client")
            return
        pending.append(ev)
        self._wake()

    def push(self, frame: Frame) -> None:
        """A frame that is not an event (a pong, a heartbeat)."""
        if self.closing is not None:
            return
        extra = self._extra
        if extra is None:
            self._extra = [frame]
        elif len(extra) < 16:  # heartbeats and pongs that pile up say nothing more
            extra.append(frame)
        self._wake()

    def close(self, code: int, reason: str) -> None:
        if self.closing is not None:
            return
        self.closing = (code, reason)
        self._pending = self._extra = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        elif self.sending and self._writer is not None:
            # Stuck writing to a client that does not read: stop waiting for it.
            self.cancelled_writer = True
            self._writer.cancel()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- used by the stream's own task ----------------------------------------------------
    def opening(self, opened: Opened) -> list[Frame]:
        """The first frames: what was missed (or a reset), then the unread counts."""
        head = opened.head
        out: list[Frame] = []
        if opened.reset:
            out.append((str(head.seq), frames.reset(head.seq, RESET_REASON)))
        for ev in opened.replay:
            out.append((str(ev.seq), frames.event(ev)))
        out.append((str(head.seq), frames.unread(head.seq, head.unread_in_app, head.unread)))
        self.position.seq = head.seq
        return out

    async def next(self) -> list[Frame] | None:
        """The next frames to write, once there are some; None when the stream must close
        (`closing` says why)."""
        self._writer = asyncio.current_task()
        while True:
            if self.closing is not None:
                return None
            out: list[Frame] = []
            if self._extra:
                out.extend(self._extra)
                self._extra = None
            if self._pending:
                batch, self._pending = self._pending, None
                await self._order(batch, out)
            if self._resync:
                self._resync = False
                await self._catch_up(out)
            if out:
                return out
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def _fill(self, position: Position, upto: int, out: list[Frame]) -> None:
        """Read the events before `upto + 1` that did not arrive (a lost pub/sub message). What
        cannot be filled (too many, or gone from the store) becomes a reset: the client reloads
        rather than silently missing something."""
        missed: list[StreamEvent] = []
        if upto - position.seq <= self._streams.replay_limit:
            try:
                missed = await self._streams.missing(self.app_id, self.user_id, position.seq, upto)
            except Exception:
                log.exception("stream of %s/%s: could not read missed events",
                              self.app_id, self.user_id)
                self.close(CLOSE_TRY_LATER, "the server could not catch up; reconnect")
                return
        for ev in missed:
            if position.step(ev.seq) is Step.SEND:
                out.append((str(ev.seq), frames.event(ev)))
                position.seq = ev.seq
        if position.seq != upto:
            log.warning("stream of %s/%s: events %d..%d cannot be replayed; reset",
                        self.app_id, self.user_id, position.seq + 1, upto)
            out.append((str(upto), frames.reset(upto, RESET_REASON)))
            position.seq = upto

    async def _catch_up(self, out: list[Frame]) -> None:
        """After the hub said it may have missed events: whatever the store has beyond what
        was sent, then the counts as they are."""
        try:
            head = await self._streams.head(self.app_id, self.user_id)
        except Exception:
            log.exception("stream of %s/%s: could not read its head", self.app_id, self.user_id)
            self.close(CLOSE_TRY_LATER, "the server could not catch up; reconnect")
            return
        if head.seq > self.position.seq:
            await self._fill(self.position, head.seq, out)
            if self.closing is None:
                out.append((str(head.seq), frames.unread(head.seq, head.unread_in_app,
                                                         head.unread)))

    async def _order(self, batch: list[StreamEvent], out: list[Frame]) -> None:
        last: StreamEvent | None = None
        position = self.position
        for ev in batch:
            step = position.step(ev.seq)
            if step is Step.SKIP:
                continue
            if step is Step.FILL:
                await self._fill(position, ev.seq - 1, out)
                if self.closing is not None:
                    return
            out.append((str(ev.seq), frames.event(ev)))
            position.seq = ev.seq
            last = ev
        if last is not None:
            # One count after a burst says all the counts in between would have.
            out.append((str(last.seq), frames.count(last)))
