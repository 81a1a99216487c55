"""Per-connection message rate limiting: a token bucket plus a strike count."""

from __future__ import annotations

import time
from collections import deque

STRIKE_WINDOW = 10.0  # seconds over which rate-limited messages are counted


class RateLimiter:
    def __init__(self, rate: float, burst: int, strikes: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_strikes = strikes
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._strikes: deque[float] = deque()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self._strikes.append(now)
        while self._strikes and now - self._strikes[0] > STRIKE_WINDOW:
            self._strikes.popleft()
        return False

    @property
    def abusive(self) -> bool:
        """Rate-limited more than ``strikes`` times within the strike window."""
        return len(self._strikes) > self.max_strikes
