"""The kernel's share of a client's backlog: a bounded send buffer, and how much of it waits.

Without a bound, Linux grows a socket's send buffer by itself (``tcp_wmem``'s maximum, 4 MB by
default, tcp(7)) and the peer's receive buffer adds its own: bytes that fit there never show in the
transport's buffer, so a client that stops reading absorbed 12,000 events over 17.6 s on loopback
before any bound of ours noticed (issue 11, E29). Two measures, both per socket:

- ``bound_send_buffer``: ``SO_SNDBUF`` (socket(7): the kernel doubles the value and stops tuning it)
  caps what the kernel holds for one client, so ``HUB_MAX_BUFFERED_BYTES`` is reached after that
  much more, not after megabytes.
- ``kernel_queued``: ``SIOCOUTQ`` (tcp(7): "the amount of unsent data in the socket send queue",
  Linux counts sent-but-unacknowledged bytes too), so the send timeout sees bytes the client has not
  taken even when our own buffer is empty. Elsewhere it answers 0 (our buffer alone counts).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import socket
import sys
import termios
from typing import TYPE_CHECKING, Any

__all__ = [
    "UNCONFIRMED_BYTES",
    "StallWatch",
    "StallWatching",
    "bound_send_buffer",
    "kernel_queued",
    "socket_of",
]

# SIOCOUTQ is TIOCOUTQ on Linux (linux/sockios.h).
_SIOCOUTQ = termios.TIOCOUTQ if sys.platform.startswith("linux") else None


def socket_of(transport: asyncio.BaseTransport | None) -> Any:
    """The transport's socket (asyncio's or uvloop's socket-like object), or None."""
    return None if transport is None else transport.get_extra_info("socket")


def bound_send_buffer(sock: Any, size: int) -> None:
    """Cap the kernel's send buffer of ``sock`` at ``size`` bytes (0: leave the kernel's default)."""
    if sock is None or size <= 0:
        return
    # Not a TCP socket (a test transport), or closed already: nothing to bound.
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def kernel_queued(sock: Any) -> int:
    """Bytes written to ``sock`` that its peer has not acknowledged yet (0 when unknown)."""
    if _SIOCOUTQ is None or sock is None:
        return 0
    try:
        buffer = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), _SIOCOUTQ, buffer, True)
    except (OSError, ValueError, AttributeError):
        return 0  # closed meanwhile, or not a socket
    return int(buffer[0])


# Bytes written and not yet seen delivered below which the kernel is not asked every second: a client
# that far behind costs nothing yet, and healthy connections mostly stay below it (issue 12's W1, half
# an event a second per connection, reaches it every ~100 s), so the heartbeat's pass over every
# connection does not turn into one system call per connection per second.
UNCONFIRMED_BYTES = 16 * 1024
# ... and at least once a send timeout the kernel is asked anyway, so that a client silent under a
# trickle of events is noticed within about two send timeouts of its receive window closing.
_LOOK_EVERY_TIMEOUTS = 1.0


class StallWatching:
    """The send timeout's bookkeeping for one stream: bytes handed to the transport (``written``)
    against bytes still queued — in the transport's buffer and in the kernel's.

    Progress is the count of delivered bytes (written − queued) rising above its best so far; bytes
    the server adds that ``written`` does not know of (aiohttp's pongs, chunk headers) only lower
    it, so they are never mistaken for progress. The kernel is asked only while our own buffer holds
    bytes, a stall is being timed, or enough is outstanding (see ``UNCONFIRMED_BYTES``).

    The logic only: its state lives in the slots ``written``, ``_delivered``, ``_since`` and
    ``_next_look`` of the class that uses it (``StallWatch``, or a sink that keeps them itself: one
    object less per connection), set up by ``_start_watch``.
    """

    if not TYPE_CHECKING:  # slots for the runtime (no __dict__ in a user's instances); mypy sees none
        __slots__ = ()

    written: int
    _delivered: int
    _since: float | None
    _next_look: float

    def _start_watch(self) -> None:
        self.written = 0
        self._delivered = 0
        self._since = None
        self._next_look = 0.0

    def unwatched_until(self, now: float, buffered: int, timeout: float) -> float:
        """After ``stalled`` said False: until when it would go on saying so if nothing more is
        written and nothing reaches ``UNCONFIRMED_BYTES`` (the writer reports those): the next time
        the kernel is due to be asked, at least a timeout away when everything was confirmed. 0
        while bytes wait in our buffer or a stall is being timed."""
        if buffered or self._since is not None:
            return 0.0
        if self.written - self._delivered <= 0:
            return max(self._next_look, now + _LOOK_EVERY_TIMEOUTS * timeout)
        return self._next_look

    def stalled(self, now: float, buffered: int, sock: Any, timeout: float) -> bool:
        """True when queued bytes have made no progress for longer than ``timeout``."""
        outstanding = self.written - self._delivered
        if buffered == 0 and self._since is None:
            if outstanding <= 0:
                return False
            if outstanding < UNCONFIRMED_BYTES and now < self._next_look:
                return False
        self._next_look = now + _LOOK_EVERY_TIMEOUTS * timeout
        queued = buffered + kernel_queued(sock)
        if queued == 0:
            self._delivered = self.written
            self._since = None
            return False
        delivered = self.written - queued
        if self._since is None or delivered > self._delivered:
            self._delivered = max(delivered, self._delivered)
            self._since = now
            return False
        return now - self._since > timeout


class StallWatch(StallWatching):
    """A ``StallWatching`` on its own."""

    __slots__ = ("_delivered", "_next_look", "_since", "written")

    def __init__(self) -> None:
        self._start_watch()
