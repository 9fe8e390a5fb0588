"""ULIDs: 48 bits of milliseconds then 80 random bits, Crockford base32, 26 characters.

Ids minted in one process within one millisecond are strictly increasing (the random part is
incremented), so ordering by id is ordering by creation, which the inbox cursor relies on; the
time part is always the creation time given, so time bounds translate into id bounds.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections import OrderedDict

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
_DECODE.update({c.lower(): i for i, c in enumerate(_ALPHABET)})
_MAX_RANDOM = (1 << 80) - 1


_FROM_RFC4648 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET)


def _encode(value: int) -> str:
    """26 Crockford digits of a 128-bit value. The standard base32 codec does the work in C:
    shifted left by 6, the value fills 17 bytes whose first 26 base32 digits are exactly its
    130-bit (two leading zero bits) big-endian form; then the alphabet is swapped."""
    return base64.b32encode((value << 6).to_bytes(17, "big"))[:26].decode().translate(_FROM_RFC4648)


class UlidFactory:
    """Keeps the last random part of each recent millisecond: ids of one millisecond stay in
    order even when ids of other milliseconds are minted in between (a request that took its
    time before minting), and a clock that steps back is followed, not hidden."""

    def __init__(self, remember: int = 4096) -> None:
        self._lock = threading.Lock()
        self._last: OrderedDict[int, int] = OrderedDict()
        self._remember = remember

    def new(self, now_ms: int | None = None) -> str:
        ms = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            last = self._last.get(ms)
            if last is not None and last < _MAX_RANDOM:
                rand = last + 1
            else:
                rand = int.from_bytes(os.urandom(10), "big") >> 1
            self._last[ms] = rand
            self._last.move_to_end(ms)
            if len(self._last) > self._remember:
                self._last.popitem(last=False)
        return _encode((ms << 80) | rand)


_factory = UlidFactory()


def new_id(now_ms: int | None = None) -> str:
    """A new id; pass the creation time in ms so that the id and `created_at` agree."""
    return _factory.new(now_ms)


def floor_id(ms: int) -> str:
    """The smallest id minted at millisecond `ms`: turns a time bound into an id bound."""
    return _encode(max(ms, 0) << 80)


def is_ulid(value: str) -> bool:
    return len(value) == 26 and value[0] in "01234567" and all(c in _DECODE for c in value)


def timestamp_ms(ulid: str) -> int:
    value = 0
    for c in ulid[:10]:
        value = value * 32 + _DECODE[c]
    return value
