"""The `log` provider: writes each message to the service log (personal data masked) and
counts it as sent. The default for every channel until an app configures a real provider."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ...domain.delivery import OutboundMessage, SendResult, Sent
from ...domain.masking import mask_target

log = logging.getLogger("tidings.provider.log")


class LogProvider:
    name = "log"

    def __init__(self, config: dict[str, Any] | None = None, options: Any = None, *,
                 max_concurrency: int = 64) -> None:
        self.max_concurrency = getattr(options, "max_concurrency", max_concurrency)

    async def send(self, messages: Sequence[OutboundMessage]) -> Sequence[SendResult]:
        results: list[SendResult] = []
        enabled = log.isEnabledFor(logging.INFO)
        for m in messages:
            # Unique per attempt, and says what it was: the log has no ids of its own.
            message_id = f"log-{m.delivery_id}-{m.attempt}"
            if enabled:
                log.info("%s to %s via log: %r (delivery %s, message %s)", m.channel,
                         mask_target(m.channel, m.target), m.title or m.body or "",
                         m.delivery_id, message_id)
            results.append(Sent(message_id))
        return results

    async def close(self) -> None:
        return None
