"""Coalescing of socket writes under load: one write per connection for several group sends.

The application creates one ``WriteBatch`` and hands it to the two ends of the fan-out path: the
RabbitMQ consumer, which holds it while it drains a backlog of events and flushes it before it
acknowledges anything, and the WebSocket sinks, which keep what they are given while it is held.
Read in one direction: consumer → lifetime manager → sink (keeps bytes, registers here) → consumer
flushes → every kept buffer goes to its socket as one write.

Rule: writes are only ever delayed while more work is already waiting. The holder flushes whenever
it has nothing more queued and before every acknowledgement, so at low load nothing waits, and
"acknowledged" always means "handed to the sockets". What a sink keeps counts against its own
bound (``HUB_MAX_BUFFERED_BYTES``), so a held batch never grows without limit.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["HeldWrites", "WriteBatch"]


class HeldWrites(Protocol):
    """A sink that keeps bytes while the batch is held."""

    def flush_held(self) -> None:
        """Write what it keeps, as one write."""
        ...


class WriteBatch:
    """Held by the consumer while it drains a backlog; sinks defer their writes into it meanwhile.

    Satisfies ``consumers.ports.WriteCoalescing`` (``hold`` / ``flush`` / ``release``).
    """

    __slots__ = ("_dirty", "held")

    def __init__(self) -> None:
        self.held = 0
        self._dirty: list[HeldWrites] = []

    def hold(self) -> None:
        self.held += 1

    def release(self) -> None:
        self.held = max(0, self.held - 1)
        if not self.held:
            self.flush()

    def defer(self, sink: HeldWrites) -> None:
        """``sink`` has started keeping bytes: flush it at the next ``flush()``."""
        self._dirty.append(sink)

    def flush(self) -> None:
        """Every sink writes what it kept, in the order they started keeping; the batch stays held."""
        while self._dirty:
            dirty, self._dirty = self._dirty, []
            for sink in dirty:
                sink.flush_held()
