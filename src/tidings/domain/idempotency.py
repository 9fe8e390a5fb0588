"""Idempotency keys: the same key and the same request replay the first answer."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

RETENTION = timedelta(hours=24)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class IdempotencyRecord:
    scope: str  # the app (or the operator) the key belongs to
    key: str
    fingerprint: str
    status_code: int
    body: bytes
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class IdempotencyClaim:
    """A request that carried an Idempotency-Key and found no earlier answer."""

    scope: str
    key: str
    fingerprint: str

    def record(self, status_code: int, body: bytes, now: datetime) -> IdempotencyRecord:
        return IdempotencyRecord(self.scope, self.key, self.fingerprint, status_code, body,
                                 now, now + RETENTION)


def fingerprint(method: str, path: str, body: Any) -> str:
    """Same request = same method, path and JSON value (key order and spacing do not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()
