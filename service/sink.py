"""What a transport gives the connection layer: a ``Sink`` per connection (how bytes reach one
client), the ``Capabilities`` the hub decides by, and ``Outgoing``, one record in wire form shared by
every recipient. Transports implement these; ``service.connections`` and the hub only use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from service.protocol import TransferFormat

__all__ = ["NO_CAPABILITIES", "Capabilities", "Outgoing", "Sink"]


class Outgoing:
    """One hub record in wire form, shared by every recipient on the same hub protocol.

    ``ws_frame`` caches the WebSocket transport's framing of ``payload``, so that a group send frames
    once per protocol, not once per connection.
    """

    __slots__ = ("payload", "ws_frame")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.ws_frame: bytes | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a transport can do, set on the connection when it attaches.

    The hub decides by these, never by the transport's name: which hub protocols the connection can
    carry, whether a dropped transport may be resumed (stateful reconnect), and whether the transport
    needs keep-alive Pings (long polling's polls are themselves the sign of life).
    """

    transfer_formats: tuple[TransferFormat, ...]
    resumable: bool
    needs_keep_alive: bool


# Before any transport has attached (never seen by the hub, which starts at attach).
NO_CAPABILITIES: Final = Capabilities(transfer_formats=(), resumable=False, needs_keep_alive=False)


class Sink(Protocol):
    """How one transport delivers bytes to one client."""

    @property
    def capabilities(self) -> Capabilities:
        """What this transport can do (the connection takes them over when the sink attaches)."""
        ...

    def write(self, out: Outgoing) -> bool:
        """Take ``out`` without waiting; ``False`` means the client cannot keep up (close it)."""
        ...

    def is_stalled(self, now: float) -> bool:
        """True when buffered data has made no progress for longer than the send timeout (or, long
        polling, the client stopped polling); ``stall_cause`` then says which."""
        ...

    @property
    def stall_cause(self) -> str | None:
        """Why ``is_stalled`` said so: ``send_timeout`` (queued bytes, the kernel's included, made no
        progress), ``not_polling`` (a long-polling client stopped polling with messages waiting), or
        None (it stopped polling with nothing waiting: gone, not slow)."""
        ...

    def grant(self, extra: int) -> None:
        """Let the buffer exceed its bound by up to ``extra`` bytes until it has drained back within it
        (noticed by ``is_stalled`` on the next heartbeat): a replay is one burst, bounded by
        ``REPLAY_MAX_EVENTS`` instead."""
        ...

    def quiet_until(self, now: float) -> float:
        """After ``is_stalled(now)`` said False: until when the heartbeat need not ask again. A sink
        that answers more than 0 (ask every round) sets ``HttpConnection.next_scan`` back to 0 itself
        when a write finds bytes waiting."""
        ...

    def close(self) -> None:
        """End the transport from the server side (WebSocket close 1000, SSE end, poll 204)."""
        ...

    def abort(self) -> None:
        """End the transport at once, without a goodbye: the client does not read what it is sent."""
        ...

    @property
    def drained(self) -> bool:
        """Everything written has left; False while a closed long-polling outbox awaits its last poll."""
        ...
