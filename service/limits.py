"""Token buckets: how the hub bounds what one connection or one user may ask for per second.

A bucket holds up to ``burst`` tokens and gains ``rate`` a second; every action takes one, and an
action finding the bucket empty is refused. So a client may do ``burst`` things at once (a page
joining its groups on connect) and ``rate`` a second for ever, never more (issue 11: one socket sent
10,000 calls as fast as it could and nothing throttled it).

Sans-I/O: the caller passes the time (the hub's once-a-second ``HubClock`` on the receive path, which
only makes refills come in one-second steps; ``time.monotonic`` for HTTP requests).
"""

from __future__ import annotations

import math

__all__ = ["TokenBucket"]


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; ``take`` spends one if there is one."""

    __slots__ = ("_tokens", "_updated", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1 (got {rate}, {burst})")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = now

    def _refill(self, now: float) -> float:
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
        return self._tokens

    def take(self, now: float) -> bool:
        """Spend one token; False (and nothing spent) when the bucket is empty."""
        if self._refill(now) >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def retry_after(self, now: float) -> int:
        """Whole seconds until ``take`` can succeed (at least 1: what ``Retry-After`` says)."""
        missing = 1.0 - self._refill(now)
        return max(1, math.ceil(missing / self.rate)) if missing > 0 else 1

    def full(self, now: float) -> bool:
        """Back at ``burst``: the same as a new bucket, so it may be forgotten."""
        return self._refill(now) >= self.burst
