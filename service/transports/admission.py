"""Per-user bounds on new connections: how many one user may hold, how many they may open a minute.

A new connection is a negotiate, or a WebSocket that skips negotiation. The user is the token's
subject (``sub``), so that one account cannot crowd out everyone else however many tabs, devices or
scripts it runs, and a reconnect storm — a broken client reconnecting in a tight loop, or a flooder
closed by the invocation limit coming straight back — is slowed to ``per_minute`` (issue 11).

Rule: refusals are raised as the ``HubHttpError``s of ``errors.py`` (429, with ``Retry-After`` when
the wait is known), counted in ``realtime_hub_rate_limited_total`` every time, and logged at WARNING
at most once a minute per user and limit (a storm of refusals must not become a storm of log lines).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import structlog

from service.connections import ConnectionManager
from service.limits import TokenBucket
from service.metrics import RATE_LIMITED

from .errors import TooManyConnectionsError, TooManyNewConnectionsError

__all__ = ["UserAdmission"]

log = structlog.get_logger(__name__)

_LOG_EVERY: Final = 60.0  # seconds between two warnings about one user and one limit
_MIN_SWEEP: Final = 1024  # per-user entries kept before forgotten ones are looked for


class UserAdmission:
    """Decides whether a user may open one more connection; raises the refusal if not."""

    def __init__(
        self,
        manager: ConnectionManager,
        *,
        max_connections: int,
        per_minute: int,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._manager = manager
        self._max_connections = max_connections
        self._per_minute = per_minute
        # At most ``burst`` at once (all of a minute's when not given), then one every 60/per_minute s.
        self._burst = per_minute if burst is None else max(1, min(burst, per_minute))
        self._clock = clock
        # A full bucket is the same as none: entries are dropped when full (see _sweep).
        self._buckets: dict[str, TokenBucket] = {}
        self._warned: dict[tuple[str, str], float] = {}
        self._sweep_at = _MIN_SWEEP

    def admit(self, subject: str) -> None:
        """Count one new connection of ``subject``, or raise why it may not have one."""
        now = self._clock()
        if len(self._buckets) + len(self._warned) >= self._sweep_at:
            self._sweep(now)
        if self._per_minute > 0:
            bucket = self._buckets.get(subject)
            if bucket is None:
                bucket = self._buckets[subject] = TokenBucket(self._per_minute / 60, self._burst, now)
            if not bucket.take(now):
                retry_after = bucket.retry_after(now)
                self._refused(subject, "negotiates_per_user", now, perMinute=self._per_minute)
                raise TooManyNewConnectionsError(self._per_minute, self._burst, retry_after)
        limit = self._max_connections
        if limit > 0 and self._manager.connections_of(subject) >= limit:
            self._refused(subject, "connections_per_user", now, maxConnections=limit)
            raise TooManyConnectionsError(limit)

    def _refused(self, subject: str, limit: str, now: float, **detail: int) -> None:
        RATE_LIMITED.labels(limit).inc()
        key = (subject, limit)
        if now - self._warned.get(key, -_LOG_EVERY) >= _LOG_EVERY:
            self._warned[key] = now
            log.warning("connection.rate_limited", limit=limit, subject=subject, **detail)

    def _sweep(self, now: float) -> None:
        """Forget users whose bucket is full again and old warnings; amortised over admissions."""
        for subject in [s for s, bucket in self._buckets.items() if bucket.full(now)]:
            del self._buckets[subject]
        for key in [k for k, at in self._warned.items() if now - at >= _LOG_EVERY]:
            del self._warned[key]
        self._sweep_at = max(_MIN_SWEEP, 2 * (len(self._buckets) + len(self._warned)))
