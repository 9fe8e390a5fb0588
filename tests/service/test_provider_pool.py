"""The provider pool builds one provider per app and name, even when lanes ask at once."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.fakes.providers import ScriptedProvider
from tidings.bootstrap import Container


async def test_concurrent_first_asks_build_one_provider(container: Container, client: Any,
                                                        acme: dict[str, Any]) -> None:
    built: list[ScriptedProvider] = []

    def factory(name: str, config: dict[str, Any]) -> ScriptedProvider:
        provider = ScriptedProvider(name)
        built.append(provider)
        return provider

    container.providers._factory = factory  # the pool as bootstrap made it, another factory
    got = await asyncio.gather(*(container.providers.get("acme", "log") for _ in range(8)))
    assert len(built) == 1 and all(p is built[0] for p in got)
