"""Capped exponential back-off with full jitter, and the provider's Retry-After."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.domain.retry import RetryPolicy


class Edge(random.Random):
    """An rng whose `uniform` answers one end of the range, to see the range itself."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


POLICY = RetryPolicy(max_attempts=8, base_seconds=2.0, cap_seconds=3600.0,
                     max_retry_after_seconds=86400.0)


def ceiling(policy: RetryPolicy, attempts: int) -> float:
    return min(policy.cap_seconds, policy.base_seconds * 2 ** max(attempts - 1, 0))


def test_the_ceiling_doubles_with_every_attempt():
    highs = [POLICY.delay(n, rng=Edge(high=True)) for n in range(1, 8)]
    assert highs == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]
    lows = [POLICY.delay(n, rng=Edge(high=False)) for n in range(1, 8)]
    assert lows == [h / 2 for h in highs]


@given(attempts=st.integers(min_value=0, max_value=200), seed=st.integers(0, 2**32))
def test_delay_is_within_half_the_ceiling_and_the_ceiling(attempts, seed):
    c = ceiling(POLICY, attempts)
    d = POLICY.delay(attempts, rng=random.Random(seed))
    assert c / 2 <= d <= c


def test_delays_grow_on_average():
    rng = random.Random(7)
    means = [sum(POLICY.delay(n, rng=rng) for _ in range(200)) / 200 for n in range(1, 8)]
    assert all(b > a * 1.5 for a, b in itertools.pairwise(means))


@pytest.mark.parametrize("attempts", [12, 13, 50, 1000])
def test_the_delay_is_capped(attempts):
    assert POLICY.delay(attempts, rng=Edge(high=True)) == POLICY.cap_seconds
    assert POLICY.delay(attempts, rng=Edge(high=False)) == POLICY.cap_seconds / 2
    small = RetryPolicy(base_seconds=1.0, cap_seconds=10.0)
    assert 5.0 <= small.delay(attempts) <= 10.0


def test_attempt_zero_counts_as_the_first():
    assert POLICY.delay(0, rng=Edge(high=True)) == POLICY.base_seconds


@pytest.mark.parametrize("retry_after", [0.0, 1.5, 30.0, 7200.0])
def test_retry_after_is_honoured_as_given(retry_after):
    # Even above the back-off cap: the provider knows when it will take the message.
    assert POLICY.delay(3, retry_after) == retry_after


def test_retry_after_is_bounded_by_the_maximum():
    assert POLICY.delay(1, 10**9) == POLICY.max_retry_after_seconds
    short = RetryPolicy(max_retry_after_seconds=60.0)
    assert short.delay(1, 61.0) == 60.0


def test_a_negative_retry_after_falls_back_to_the_back_off():
    assert POLICY.delay(3, -5.0, rng=Edge(high=True)) == 8.0


def test_exhausted_after_max_attempts():
    policy = RetryPolicy(max_attempts=3)
    assert [policy.exhausted(n) for n in range(0, 6)] == [False, False, False, True, True, True]
    assert RetryPolicy(max_attempts=1).exhausted(1)
