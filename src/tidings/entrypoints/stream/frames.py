"""Stream events as the text a client receives: rendered once per event, whatever the number
of connections it goes to. The documents themselves (`event_doc`, `unread_doc`) are the
domain's, so that every way a stream reaches a client sends the same ones."""

from __future__ import annotations

from typing import Any

import orjson

from ...domain.stream import PONG_DOC, StreamEvent, event_doc, reset_doc, unread_doc
from .wsprotocol import text_frames

__all__ = ["PONG", "count", "event", "event_doc", "reset", "unread", "unread_doc", "ws_pair"]


def _dump(doc: dict[str, Any]) -> str:
    return orjson.dumps(doc).decode()


def event(ev: StreamEvent) -> str:
    text = ev.wire.get("event")
    if text is None:
        text = ev.wire["event"] = _dump(event_doc(ev))
    return text


def count(ev: StreamEvent) -> str:
    """The unread counts just after `ev`, under the same id."""
    text = ev.wire.get("count")
    if text is None:
        text = ev.wire["count"] = _dump(
            unread_doc(ev.seq, ev.unread_in_app, ev.unread))
    return text


def ws_pair(ev: StreamEvent) -> bytes:
    """The event and its counts as two WebSocket frames, made once for every connection of
    the user (straight from the JSON bytes: a broadcast makes one of these per recipient)."""
    data = ev.wire.get("ws")
    if data is None:
        data = ev.wire["ws"] = text_frames([
            orjson.dumps(event_doc(ev)),
            orjson.dumps(unread_doc(ev.seq, ev.unread_in_app, ev.unread))])
    return data


def unread(seq: int, in_app: int, total: int) -> str:
    return _dump(unread_doc(seq, in_app, total))


def reset(seq: int, reason: str) -> str:
    return _dump(reset_doc(seq, reason))


PONG = _dump(PONG_DOC)
