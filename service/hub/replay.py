"""Stateful reconnect bookkeeping for one connection (ASP.NET ``MessageBuffer.cs``), without I/O.

HubProtocol.md, Stateful Reconnect: each side numbers the trackable messages it sends from 1, keeps
them until the peer acks them, and after a dropped transport sends ``Sequence`` (the first unacked
id) followed by every unacked message; the receiver skips the ones it already processed.

Rule: memory is bounded by ``limit`` bytes. ASP.NET makes senders wait for acks when the buffer is
full; a group send here never waits, so the oldest entries are dropped instead and the buffer is
``lossy`` while the client has not acked everything dropped: a resume then would silently miss
messages, so the hub refuses it and the client falls back to a fresh connection (and rejoins its
groups).
"""

from __future__ import annotations

from collections import deque

from service.protocol import InvalidMessageError

__all__ = ["ReplayBuffer"]


class ReplayBuffer:
    __slots__ = (
        "_acked_through",
        "_dropped_through",
        "_entries",
        "_last_acked_received",
        "_last_processed",
        "_next_incoming",
        "buffered_bytes",
        "limit",
        "total_sent",
    )

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: deque[tuple[int, bytes]] = deque()
        self.buffered_bytes = 0
        self.total_sent = 0
        self._dropped_through = 0  # the newest id dropped unacked to stay under the limit
        self._acked_through = 0
        # Receiving side: ids of the peer's trackable messages.
        self._next_incoming = 1
        self._last_processed = 0
        self._last_acked_received = 0

    # --- sending ------------------------------------------------------------------------------

    def record_sent(self, payload: bytes) -> None:
        """Number and keep one outgoing trackable message (already framed for its protocol)."""
        self.total_sent += 1
        self._entries.append((self.total_sent, payload))
        self.buffered_bytes += len(payload)
        while self.buffered_bytes > self.limit and self._entries:
            self._dropped_through, dropped = self._entries.popleft()
            self.buffered_bytes -= len(dropped)

    def ack(self, sequence_id: int) -> None:
        """The peer processed everything up to ``sequence_id``: forget it."""
        entries = self._entries
        while entries and entries[0][0] <= sequence_id:
            _, payload = entries.popleft()
            self.buffered_bytes -= len(payload)
        # Capped at what was sent: an Ack beyond it must not hide a later drop for good.
        self._acked_through = max(self._acked_through, min(sequence_id, self.total_sent))

    @property
    def lossy(self) -> bool:
        """Whether a message the peer has not acked was dropped (an ack past it means it arrived)."""
        return self._dropped_through > self._acked_through

    @property
    def acked_through(self) -> int:
        return self._acked_through

    def resend(self) -> tuple[int, list[bytes]]:
        """After a resume: the Sequence id to announce and the payloads to send again, in order."""
        first = self._entries[0][0] if self._entries else self.total_sent + 1
        return first, [payload for _, payload in self._entries]

    # --- receiving ----------------------------------------------------------------------------

    def should_process(self) -> bool:
        """Count one incoming trackable message; False when it is a replayed duplicate."""
        incoming = self._next_incoming
        self._next_incoming += 1
        if incoming <= self._last_processed:
            return False
        self._last_processed = incoming
        return True

    def on_sequence(self, sequence_id: int) -> None:
        """The peer resumes: its next trackable message carries ``sequence_id``."""
        # MessageBuffer.cs: "Sequence ID greater than amount of messages we've received."
        if sequence_id > self._last_processed + 1:
            raise InvalidMessageError("Sequence ID greater than amount of messages we've received.")
        self._next_incoming = sequence_id

    def ack_due(self) -> int | None:
        """The id to acknowledge now, if anything new arrived since the last Ack."""
        if self._last_processed > self._last_acked_received:
            self._last_acked_received = self._last_processed
            return self._last_processed
        return None
