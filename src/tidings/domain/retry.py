"""When to try a delivery again: capped exponential back-off with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 2.0
    cap_seconds: float = 3600.0
    max_retry_after_seconds: float = 86400.0

    def delay(self, attempts: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to wait after the `attempts`-th attempt failed transiently.

        A provider's Retry-After is honoured as given (bounded by a day, so a broken header
        cannot park a delivery forever); otherwise full jitter over the capped exponential.
        """
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_retry_after_seconds)
        ceiling = min(self.cap_seconds, self.base_seconds * (2 ** max(attempts - 1, 0)))
        return (rng or random).uniform(ceiling / 2, ceiling)

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts
