"""The registry of open streams, without a server."""

from __future__ import annotations

from typing import Any

from tidings.domain.stream import Kick
from tidings.entrypoints.stream.listener import Listener
from tidings.entrypoints.stream.registry import StreamRegistry


def listener(container: Any, app: str = "a", user: str = "u", key: str | None = "k1") -> Listener:
    return Listener(container.streams, app, user, key, None, 8)


async def test_a_stream_opened_during_shutdown_is_closed_at_once(container: Any) -> None:
    registry = StreamRegistry(container.credentials, container.clock, heartbeat=20, recheck=30)
    before = listener(container)
    registry.add(before)
    registry.shutdown()
    late = listener(container)
    registry.add(late)  # it was authorizing while the others were closed
    assert before.closing and before.closing[0] == 1001
    assert late.closing and late.closing[0] == 1001


async def test_kicks_match_key_app_and_user(container: Any) -> None:
    registry = StreamRegistry(container.credentials, container.clock, heartbeat=20, recheck=30)
    mine, other_key, other_app, other_user = (
        listener(container), listener(container, key="k2"), listener(container, app="b"),
        listener(container, user="v"))
    for item in (mine, other_key, other_app, other_user):
        registry.add(item)
    registry.kick(Kick(4401, "revoked", app_id="a", key_id="k1"))
    assert mine.closing == (4401, "revoked")
    assert other_key.closing is None and other_app.closing is None
    assert other_user.closing == (4401, "revoked")  # the key signed both users' tokens
    registry.kick(Kick(4404, "gone", app_id="b", user_id="u"))
    assert other_app.closing == (4404, "gone") and other_key.closing is None
