"""What the consumers need from the hub, as interfaces, so that ``consumers`` never imports ``service``.

``service.app`` hands the consumer the hub's event journal (an ``EventLog``) and the app's write
batch (a ``WriteCoalescing``); both satisfy these structurally.
"""

from __future__ import annotations

from typing import Protocol

from schemas.log import LogRecord

__all__ = ["EventLog", "WriteCoalescing"]


class EventLog(Protocol):
    """The hub side of the shared log: its history, and delivery to the groups' connections."""

    def record(self, record: LogRecord) -> None:
        """Keep ``record`` as the newest entry of the history (offsets only ever grow)."""
        ...

    def deliver(self, record: LogRecord) -> int:
        """Hand ``record`` (already recorded) to every connection in its groups, once each.

        Synchronous and non-blocking: serialized once per hub protocol and variant, handed to each
        member's bounded outgoing buffer before this returns; connections that asked for positions
        get the record's position as one extra trailing argument. Returns how many connections it
        was handed to.
        """
        ...

    def reset(self, reason: str) -> None:
        """The log was interrupted (an unknown stretch of it was not read, or it was recreated):
        forget the history and make clients that track positions resume."""
        ...


class WriteCoalescing(Protocol):
    """Optional: merging of a connection's socket writes while the consumer drains a backlog.

    Between ``hold()`` and ``release()`` the sockets may keep what ``deliver`` hands them and write
    it later as one write; ``flush()`` writes everything kept. The consumer flushes before it
    acknowledges anything, so "acked" still means "handed to the sockets".
    """

    def hold(self) -> None: ...

    def flush(self) -> None: ...

    def release(self) -> None: ...
