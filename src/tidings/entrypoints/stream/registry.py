"""Every stream open in this process: closing them when their credential goes (a revoked key,
an expired token, a deleted user or app), heartbeats for event streams, and closing all at
shutdown. One loop for all of them, not a timer per stream."""

from __future__ import annotations

import asyncio
import logging

from ...domain.errors import RateLimited
from ...domain.stream import CLOSE_GOING_AWAY, CLOSE_UNAUTHENTICATED, Kick
from ...ports import Clock
from ...service.keys import Credentials
from ...service.stream import Opened, Streams
from .access import Access
from .listener import HEARTBEAT, Listener

log = logging.getLogger("tidings.stream")


class StreamRegistry:
    def __init__(self, credentials: Credentials, clock: Clock, *, heartbeat: float,
                 recheck: float) -> None:
        self._credentials = credentials
        self._clock = clock
        self._heartbeat = heartbeat
        self._recheck = recheck
        self.listeners: set[Listener] = set()
        self.heartbeats: set[Listener] = set()  # event streams; WebSockets ping on their own
        self.shutting_down = False

    def add(self, listener: Listener, heartbeat: bool = False) -> None:
        self.listeners.add(listener)
        if heartbeat:
            self.heartbeats.add(listener)
        if self.shutting_down:  # it opened while the others were being closed
            listener.close(CLOSE_GOING_AWAY, "the server is shutting down; reconnect")

    async def open(self, streams: Streams, access: Access, max_events: int,
                   heartbeat: bool = False) -> tuple[Listener, Opened]:
        """A listener for the stream `access` allows, subscribed, with what it missed."""
        if self.shutting_down:
            raise RateLimited("the server is shutting down; reconnect", retry_after=1)
        listener = Listener(streams, access.app_id, access.user_id, access.key_id,
                            access.expires_at, max_events)
        opened = await streams.open(access.app_id, access.user_id, access.after,
                                    listener.deliver)
        self.add(listener, heartbeat)
        return listener, opened

    def remove(self, listener: Listener) -> None:
        self.listeners.discard(listener)
        self.heartbeats.discard(listener)

    def kick(self, kick: Kick) -> None:
        for listener in list(self.listeners):
            if kick.matches(listener.app_id, listener.user_id, listener.key_id):
                listener.close(kick.code, kick.reason)

    def shutdown(self) -> None:
        self.shutting_down = True
        for listener in list(self.listeners):
            listener.close(CLOSE_GOING_AWAY, "the server is shutting down; reconnect")

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self._heartbeat
        next_check = loop.time() + self._recheck
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
                break
            except TimeoutError:
                pass
            now = self._clock.now().timestamp()
            for listener in list(self.listeners):
                if listener.expires_at is not None and listener.expires_at <= now:
                    listener.close(CLOSE_UNAUTHENTICATED, "the token has expired; get a new one")
            if loop.time() >= next_beat:
                next_beat = loop.time() + self._heartbeat
                for listener in list(self.heartbeats):
                    listener.push(HEARTBEAT)
            if loop.time() >= next_check:
                next_check = loop.time() + self._recheck
                try:
                    await self._check_keys()
                except Exception:
                    log.exception("could not re-check the keys of open streams")

    async def _check_keys(self) -> None:
        """A kick from another node can be lost (pub/sub keeps nothing); this is the net."""
        keys = {listener.key_id for listener in self.listeners if listener.key_id}
        for key_id in keys:
            if not await self._credentials.is_active(key_id):
                self.kick(Kick(CLOSE_UNAUTHENTICATED, "the key was revoked", key_id=key_id))
