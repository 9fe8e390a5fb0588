"""Streams.publish hands the hub only events the store has numbered."""

from __future__ import annotations

from datetime import UTC, datetime

from tidings.domain.stream import StreamEvent
from tidings.service.stream import Streams

AT = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


class RecordingHub:
    def __init__(self) -> None:
        self.published: list[list[StreamEvent]] = []

    async def publish(self, events):
        self.published.append(list(events))


async def test_events_the_store_has_not_numbered_are_not_published():
    """On DynamoDB, part of a large send whose piece failed is finished by its journal's
    recovery later; its events keep the number 0 until then and are read at the next sync."""
    hub = RecordingHub()
    streams = Streams(store=None, hub=hub, clock=None, retention_seconds=60)  # type: ignore[arg-type]
    numbered = StreamEvent("acme", "u1", 7, "notification.created", {"id": "a"}, AT)
    pending = StreamEvent("acme", "u2", 0, "notification.created", {"id": "b"}, AT)
    await streams.publish([numbered, pending])
    await streams.publish([pending])
    assert hub.published == [[numbered]]
