"""``signaling.ratelimit.RateLimiter``: the token bucket (burst, refill, cap) and
the strike count over ``STRIKE_WINDOW`` behind ``abusive``, on a fake clock."""

from __future__ import annotations

import types

import pytest

from signaling import ratelimit
from signaling.ratelimit import STRIKE_WINDOW, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    # the module's own ``time``: the event loop's clock stays real
    monkeypatch.setattr(
        ratelimit, "time", types.SimpleNamespace(monotonic=clock.monotonic)
    )
    return clock


def allowed(limiter: RateLimiter, attempts: int) -> int:
    return sum(limiter.allow() for _ in range(attempts))


def test_burst_is_allowed_at_once(clock):
    limiter = RateLimiter(rate=1.0, burst=5, strikes=3)
    assert allowed(limiter, 5) == 5


def test_beyond_burst_is_refused(clock):
    limiter = RateLimiter(rate=1.0, burst=5, strikes=3)
    allowed(limiter, 5)
    assert limiter.allow() is False


def test_tokens_refill_at_the_rate(clock):
    limiter = RateLimiter(rate=2.0, burst=4, strikes=100)
    allowed(limiter, 4)
    clock.advance(1.5)  # 3 tokens
    assert allowed(limiter, 10) == 3


def test_partial_token_is_not_enough(clock):
    limiter = RateLimiter(rate=2.0, burst=1, strikes=100)
    assert limiter.allow()
    clock.advance(0.25)  # half a token
    assert not limiter.allow()
    clock.advance(0.25)  # the half carried over: one token
    assert limiter.allow()


def test_refill_is_capped_at_burst(clock):
    limiter = RateLimiter(rate=10.0, burst=3, strikes=100)
    allowed(limiter, 3)
    clock.advance(3600)
    assert allowed(limiter, 10) == 3


def test_allowed_messages_are_not_strikes(clock):
    limiter = RateLimiter(rate=1.0, burst=50, strikes=0)
    allowed(limiter, 50)
    assert not limiter.abusive


def test_abusive_after_more_than_strikes_refusals(clock):
    limiter = RateLimiter(rate=0.001, burst=1, strikes=3)
    limiter.allow()
    for _ in range(3):
        assert not limiter.allow()
    assert not limiter.abusive  # exactly ``strikes``
    limiter.allow()
    assert limiter.abusive


def test_strikes_older_than_the_window_are_forgotten(clock):
    limiter = RateLimiter(rate=0.001, burst=1, strikes=3)
    limiter.allow()
    allowed(limiter, 4)
    assert limiter.abusive
    clock.advance(STRIKE_WINDOW + 0.5)
    assert not limiter.allow()  # 0.0105 tokens
    assert not limiter.abusive  # only this strike is in the window


def test_strikes_exactly_window_old_still_count(clock):
    limiter = RateLimiter(rate=0.001, burst=1, strikes=3)
    limiter.allow()
    allowed(limiter, 3)
    clock.advance(STRIKE_WINDOW)
    limiter.allow()
    assert limiter.abusive  # 4 strikes within 10 s inclusive


def test_strikes_spread_over_the_window_accumulate(clock):
    limiter = RateLimiter(rate=0.001, burst=1, strikes=2)
    limiter.allow()
    for _ in range(3):
        limiter.allow()
        clock.advance(4.0)
    # strikes at 0, 4 and 8 s: all within 10 s of each other
    assert limiter.abusive


def test_strike_window_is_the_documented_10_seconds():
    assert STRIKE_WINDOW == 10.0
