"""A bounded byte queue between synchronous writers (the hub) and one HTTP response (SSE, poll).

Rule: ``put`` never waits; past ``limit`` bytes it refuses, and the caller drops that client.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Outbox"]


class Outbox:
    __slots__ = ("_allowance", "_chunks", "_limit", "_size", "_waiter", "closed")

    def __init__(self, limit: int) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit
        self._allowance = 0  # extra bytes granted for one burst, until the outbox is below the limit
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

    @property
    def size(self) -> int:
        return self._size

    def put(self, data: bytes) -> bool:
        if self.closed:
            return True  # the response is over; nothing to deliver to
        if self._size + len(data) > self._limit + self._allowance:
            return False
        self._chunks.append(data)
        self._size += len(data)
        self._wake()
        return True

    def grant(self, extra: int) -> None:
        """Raise the bound by ``extra`` until ``settle()`` finds the outbox back within it."""
        self._allowance += extra

    def settle(self) -> None:
        """Called by the heartbeat: once drained back within the bound, a granted burst is over."""
        if self._allowance and self._size <= self._limit:
            self._allowance = 0

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        return data

    def close(self) -> None:
        self.closed = True
        self._wake()

    def interrupt(self) -> None:
        """Wake whoever waits now, without data (a newer long poll took over)."""
        self._wake()

    async def wait(self, timeout: float | None) -> None:
        """Return when there is data, the outbox closed, or ``timeout`` passed."""
        if self._chunks or self.closed:
            return
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            pass
        finally:
            if self._waiter is waiter:
                self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
