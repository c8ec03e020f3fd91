"""Remembers recently handled messages so that the same message is not pushed to clients twice.

A producer publishes a message again when a publisher confirm is lost, and an outbox relay re-sends
after a crash (https://www.rabbitmq.com/docs/confirms, "at-least-once"): the log then holds the same
event twice, at two offsets. Every message is looked up by its key — the producer's ``message_id``,
else a hash of the body — and one seen within the window is not pushed again.

Rule: bounded memory. At most ``max_entries`` keys, each forgotten ``window_seconds`` after it was
handled (oldest first when full). ``max_entries == 0`` or ``window_seconds == 0`` disables it.
No I/O; the clock is injectable for tests.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["DuplicateFilter", "message_key"]


def message_key(message_id: str | None, body: bytes) -> str:
    """The producer's ``message_id`` when it set one, else a hash of the body."""
    if message_id:
        return f"id:{message_id}"
    return f"sha256:{hashlib.sha256(body).hexdigest()}"


class DuplicateFilter:
    """A time-windowed, size-bounded set of message keys."""

    def __init__(
        self,
        window_seconds: float,
        max_entries: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._handled: OrderedDict[str, float] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._window > 0 and self._max_entries > 0

    def __len__(self) -> int:
        return len(self._handled)

    def seen(self, key: str) -> bool:
        """Whether ``key`` was handled within the window."""
        if not self.enabled:
            return False
        self._expire()
        return key in self._handled

    def remember(self, key: str) -> None:
        """Record that ``key`` was handled now."""
        if not self.enabled:
            return
        self._handled[key] = self._clock()
        self._handled.move_to_end(key)
        self._expire()
        while len(self._handled) > self._max_entries:
            self._handled.popitem(last=False)

    def _expire(self) -> None:
        horizon = self._clock() - self._window
        while self._handled:
            key, handled_at = next(iter(self._handled.items()))
            if handled_at > horizon:
                break
            del self._handled[key]
