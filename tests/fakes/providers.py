"""A provider that answers what the test tells it to, and remembers what it was sent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tidings.domain.delivery import OutboundMessage, SendResult, Sent

Script = Callable[[OutboundMessage], SendResult]


class ScriptedProvider:
    def __init__(self, name: str, script: Script | None = None) -> None:
        self.name = name
        self.max_concurrency = 8
        self.script: Script = script or (lambda m: Sent(f"msg-{m.delivery_id}"))
        self.sent: list[OutboundMessage] = []
        self.closed = False

    async def send(self, messages: Sequence[OutboundMessage]) -> Sequence[SendResult]:
        self.sent.extend(messages)
        return [self.script(m) for m in messages]

    async def close(self) -> None:
        self.closed = True


class ScriptedFactory:
    """Builds (and keeps) one ScriptedProvider per provider name."""

    def __init__(self) -> None:
        self.providers: dict[str, ScriptedProvider] = {}
        self.configs: dict[str, dict[str, Any]] = {}

    def __call__(self, name: str, config: dict[str, Any]) -> ScriptedProvider:
        self.configs[name] = config
        if name not in self.providers:
            self.providers[name] = ScriptedProvider(name)
        return self.providers[name]

    def get(self, name: str) -> ScriptedProvider:
        return self(name, self.configs.get(name, {}))
