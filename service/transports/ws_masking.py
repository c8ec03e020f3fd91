"""Client frames must be masked: the check aiohttp's server does not make (RFC 6455 §5.1).

RFC 6455 §5.1: "The server MUST close the connection upon receiving a frame that is not masked. In
this case, a server MAY send a Close frame with a status code of 1002 (protocol error)". aiohttp's
WebSocket reader (``aiohttp/_websocket/reader_py.py`` and its compiled twin ``reader_c``) reads the
MASK bit only to know whether to unmask; it serves clients and servers alike and accepts an unmasked
frame from a client. Nothing in aiohttp's public API turns the check on, so it is made here, before
aiohttp sees the bytes:

- ``MaskScanner`` is sans-I/O: it follows the frame headers of the inbound byte stream (skipping
  payloads without copying them) and reports the offset of the first frame whose MASK bit is 0.
- ``MaskGuard`` sits between the socket's transport and aiohttp's protocol, with asyncio's public
  ``Transport.set_protocol``: it hands every byte up to the offending frame to aiohttp, and nothing
  after it, and calls its ``on_unmasked``; the WebSocket handler then closes with 1002.

``MaskGuard`` scans by itself (it is a ``MaskScanning`` with the scanner's state in its own slots)
and is meant to be subclassed: the WebSocket sink is its subclass, so that an open socket keeps one
object for all of it, not a guard, a scanner and the callbacks between them (issue 12: memory per
idle WebSocket).

Rule: one extra pass over frame headers per read, never over payloads.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

__all__ = ["MaskGuard", "MaskScanner", "MaskScanning", "pipelined_bytes"]

_MASK_BIT = 0x80
_LENGTH_BITS = 0x7F
_MASKING_KEY = 4  # bytes after the (extended) payload length of a masked frame


class MaskScanning:
    """Follows frame boundaries in a client's byte stream; finds the first unmasked frame.

    ``feed(data)`` returns -1 while every frame header seen so far carries the MASK bit, else the
    offset in ``data`` where the unmasked frame starts (0 if its header began in an earlier chunk).
    After a violation it returns 0 for everything: the stream is no longer trusted.

    The logic only: its state lives in the slots ``_skip``, ``_carry`` and ``_failed`` of the class
    that uses it (``MaskScanner``, ``MaskGuard``), set up by ``_start_scanning``.
    """

    if not TYPE_CHECKING:  # slots for the runtime (no __dict__ in a user's instances); mypy sees none
        __slots__ = ()

    _skip: int  # payload (and masking key) bytes still to pass over
    _carry: bytes  # the start of a frame header split across reads
    _failed: bool

    def _start_scanning(self) -> None:
        self._skip = 0
        self._carry = b""
        self._failed = False

    @property
    def failed(self) -> bool:
        return self._failed

    def feed(self, data: bytes) -> int:
        if self._failed:
            return 0
        carried = len(self._carry)
        if carried:
            data = self._carry + data
            self._carry = b""
        end = len(data)
        pos = 0
        skip = self._skip
        while True:
            if skip:
                if skip >= end - pos:
                    self._skip = skip - (end - pos)
                    return -1
                pos += skip
                skip = 0
            if end - pos < 2:
                self._skip = 0
                self._carry = data[pos:]
                return -1
            second = data[pos + 1]
            # RFC 6455 §5.2: "Mask: 1 bit. Defines whether the "Payload data" is masked. [...] All
            # frames sent from client to server have this bit set to 1."
            if not second & _MASK_BIT:
                self._failed = True
                return max(pos - carried, 0)
            length = second & _LENGTH_BITS
            if length < 126:
                pos += 2
            elif length == 126:
                if end - pos < 4:
                    self._skip = 0
                    self._carry = data[pos:]
                    return -1
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                pos += 4
            else:
                if end - pos < 10:
                    self._skip = 0
                    self._carry = data[pos:]
                    return -1
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                pos += 10
            skip = _MASKING_KEY + length


class MaskScanner(MaskScanning):
    """A ``MaskScanning`` on its own (for bytes no guard sees, e.g. those pipelined with the upgrade)."""

    __slots__ = ("_carry", "_failed", "_skip")

    def __init__(self) -> None:
        self._start_scanning()


class MaskGuard(MaskScanning, asyncio.Protocol):
    """The socket's protocol while a WebSocket is open: checks masks, then hands bytes to aiohttp.

    Subclasses say what an unmasked frame does (``on_unmasked``) and may add slots of their own; the
    scanner's state is the guard's own (``MaskScanning``).
    """

    __slots__ = ("_carry", "_failed", "_inner", "_skip")

    def __init__(self) -> None:
        self._start_scanning()
        self._inner: Any = None  # aiohttp's RequestHandler once installed (typed by aiohttp BaseProtocol)

    def install(self, transport: asyncio.BaseTransport) -> None:
        """Put this guard between ``transport`` and its protocol (aiohttp's, before the upgrade)."""
        self._inner = transport.get_protocol()
        transport.set_protocol(self)

    def on_unmasked(self) -> None:
        """An unmasked frame came (here or, fed by hand, pipelined before): fail the connection."""
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        if self._failed:
            return  # after an unmasked frame nothing more reaches aiohttp
        cut = self.feed(data)
        if cut < 0:
            self._inner.data_received(data)
            return
        if cut:
            self._inner.data_received(data[:cut])
        self.on_unmasked()

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def pipelined_bytes(request: web.Request) -> bytes:
    """Bytes the client sent after its upgrade request that aiohttp holds until the WebSocket opens.

    RFC 6455 §4.1 has a client wait for the server's handshake before sending frames, but a raw
    client can send frames in the same packet as its request; aiohttp keeps them in the protocol's
    ``_message_tail`` and parses them in ``WebSocketResponse.prepare``. No public API shows them, so
    this is the one place that reads an aiohttp internal; ``tests/transports/test_ws_masking.py``
    fails if aiohttp renames it (a pipelined unmasked frame would then go unchecked).
    """
    tail = getattr(request.protocol, "_message_tail", b"")
    return bytes(tail) if isinstance(tail, (bytes, bytearray)) else b""
