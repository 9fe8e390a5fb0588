"""What a process may trust for a few seconds: verified keys, apps' settings.

A change made through this process drops the entry at once; one made through another process
shows within `ttl` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, ttl: float, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: dict[K, tuple[float, V]] = {}

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """(True, value) while the entry is fresh, else (False, None): a cached None is a hit."""
        hit = self._entries.get(key)
        if hit is not None and hit[0] > self._clock():
            return True, hit[1]
        return False, None

    def put(self, key: K, value: V) -> V:
        if len(self._entries) >= self._max:
            self._entries.clear()  # a burst of distinct keys: start over rather than grow
        self._entries[key] = (self._clock() + self._ttl, value)
        return value

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)

    def values(self) -> Iterator[tuple[K, V]]:
        return ((k, v) for k, (_, v) in list(self._entries.items()))
