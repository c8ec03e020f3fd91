"""WebSockets transport: full duplex bytes over one socket (TransportProtocols.md, "WebSockets").

Inbound: every Text or Binary frame is appended to the connection's byte stream (frame boundaries
mean nothing). Outbound: JSON goes out as Text frames, MessagePack as Binary frames (the transfer
format the handshake picked). Client frames must be masked (RFC 6455 §5.1): ``ws_masking`` checks
the bytes before aiohttp parses them, and an unmasked frame fails the connection with 1002.

Rule: outbound writes never await. The frame for a group send is built once per protocol and written
straight to the socket's transport (aiohttp writes uncompressed frames synchronously too, so frames
never interleave); the transport's own buffer is the outbox, bounded by ``max_buffered`` — beyond
that, or with no progress for ``send_timeout`` (the kernel's queue counted, see ``sockets.py``), the
client is too slow and is dropped (``ConnectionManager.drop_slow``). While the
consumer holds the app's ``WriteBatch`` (it is draining a backlog), frames wait in the sink, counted
against the same bound, and go out as one write per socket when it flushes.

Rule: only the task that reads the socket closes it. A server-side close (``WebSocketSink.close``)
wakes that task, which sends the Close frame and reads until the client's Close frame comes back
(RFC 6455 §7.1.1: the server closes TCP after the handshake). aiohttp's ``close()`` from another task
interrupts the reader and closes TCP right after its own frame, so a client busy for a moment found
the socket gone when it answered and reported 1006 instead of 1000.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import structlog
from aiohttp import WSMsgType, web
from structlog.contextvars import bind_contextvars, reset_contextvars

from config.settings import Transport
from service.connections import Capabilities, ConnectionManager, HttpConnection, Outgoing
from service.metrics import PROTOCOL_ERRORS
from service.protocol import TRANSFER_FORMATS, TransferFormat
from service.write_batch import WriteBatch

from .sockets import UNCONFIRMED_BYTES, StallWatching, bound_send_buffer, socket_of
from .ws_masking import MaskGuard, pipelined_bytes

__all__ = ["WebSocketSink", "build_frame", "serve_websocket"]

log = structlog.get_logger(__name__)

_MESSAGE_TOO_BIG = 1009  # RFC 6455 §7.4.1, the code of aiohttp's WebSocketError for a frame too large

_TEXT = 0x81  # FIN + text opcode
_BINARY = 0x82  # FIN + binary opcode
_CLOSE_TIMEOUT = 5.0  # WebSocketOptions.CloseTimeout
# RFC 6455 §7.4.1: "1002 indicates that an endpoint is terminating the connection due to a protocol
# error." The reason (§5.5.1: UTF-8 after the code) tells a developer what their client did.
_UNMASKED_CLOSE_REASON = b"client frames must be masked"
_CLOSE_UNMASKED = struct.pack("!BBH", 0x88, 2 + len(_UNMASKED_CLOSE_REASON), 1002) + _UNMASKED_CLOSE_REASON

CAPABILITIES = Capabilities(
    transfer_formats=TRANSFER_FORMATS[Transport.WEBSOCKETS], resumable=True, needs_keep_alive=True
)


def build_frame(payload: bytes, *, binary: bool) -> bytes:
    """An unmasked, unfragmented server frame (RFC 6455 §5.2)."""
    first = _BINARY if binary else _TEXT
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


class WebSocketSink(StallWatching, MaskGuard):
    """Writes hub records to one WebSocket — and, installed as its transport's protocol before the
    upgrade, checks that every client frame is masked (``MaskGuard``) and keeps the send timeout's
    bookkeeping (``StallWatching``) in its own slots: one object per open socket (issue 12).
    """

    __slots__ = (
        "_allowance",
        "_batch",
        "_connection",
        "_delivered",
        "_ended",
        "_max_buffered",
        "_next_look",
        "_opened",
        "_pending",
        "_pending_size",
        "_reader",
        "_send_timeout",
        "_since",
        "_socket",
        "_transport",
        "written",
    )

    capabilities = CAPABILITIES

    def __init__(
        self,
        transport: asyncio.Transport | None,
        connection: HttpConnection,
        *,
        batch: WriteBatch,
        max_buffered: int,
        send_timeout: float,
    ) -> None:
        MaskGuard.__init__(self)
        self._start_watch()  # bytes written vs. bytes still queued, the kernel's included
        # The socket's transport (``request.transport``), looked up once: a group send writes to it
        # once per member.
        self._transport = transport
        self._batch = batch
        self._connection = connection
        self._max_buffered = max_buffered
        self._allowance = 0  # extra bytes granted for one burst (a replay), until drained below the bound
        self._send_timeout = send_timeout
        self._socket = socket_of(transport)
        # Frames held back while the batch is held; written as one write by flush_held.
        self._pending: list[bytes] | None = None
        self._pending_size = 0
        # Set by close(): the read loop sends the Close frame and finishes the handshake.
        self._ended = False
        # The read loop's task while it waits for the next message (None while it handles one): the
        # server ending the socket interrupts that wait. No task or future per connection for this —
        # an idle socket's footprint is what it keeps alive (issue 12).
        self._reader: asyncio.Task[Any] | None = None
        self._opened = False  # the 101 has gone out

    # --- client frames must be masked (RFC 6455 §5.1) -------------------------------------------

    def on_unmasked(self) -> None:
        """An unmasked client frame: counted, logged, and the connection failed with 1002 (right after
        the 101 when it came before). The read loop then stops (``failed``)."""
        PROTOCOL_ERRORS.labels("unmasked_frame").inc()
        log.info(
            "websocket.unmasked_frame",
            connectionId=self._connection.connection_id,
            closeStatus=1002,
            rule="RFC 6455 §5.1: a server MUST close the connection upon receiving an unmasked frame",
        )
        if self._opened:
            self._close_failed()

    def opened(self) -> None:
        """The 101 has gone out: an unmasked frame that came before fails the connection now."""
        self._opened = True
        if self._failed:
            self._close_failed()

    def _close_failed(self) -> None:
        # RFC 6455 §7.1.7, Fail the WebSocket Connection: send a Close frame, close the TCP connection,
        # and "MUST NOT continue to attempt to process data (including a responding Close frame)".
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(_CLOSE_UNMASKED)
            transport.close()

    # --- the sink -----------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """The server has ended this WebSocket (the read loop then closes it)."""
        return self._ended

    def reading(self, task: asyncio.Task[Any] | None) -> None:
        """The read loop waits for the next message in ``task`` (None: it handles one)."""
        self._reader = task

    def interrupted(self, task: asyncio.Task[Any]) -> bool:
        """Was ``task``'s cancellation _end's, and only _end's? Then it is taken back (uncancel)."""
        if not self._ended or task.cancelling() > 1:
            return False  # a cancellation from outside goes on
        task.uncancel()
        return True

    def write(self, out: Outgoing) -> bool:
        transport = self._transport
        if transport is None or transport.is_closing() or self._ended:
            return True  # going away already; the read loop will notice and clean up
        frame = out.ws_frame
        if frame is None:
            frame = out.ws_frame = build_frame(
                out.payload, binary=self._connection.transfer_format is TransferFormat.BINARY
            )
        size = len(frame)
        limit = self._max_buffered + self._allowance
        buffered = transport.get_write_buffer_size()
        if buffered:
            self._connection.next_scan = 0.0  # bytes wait: the heartbeat's scan times them again
        pending = self._pending
        if pending is not None:
            # Bounded as if written: what waits here counts against the same limit.
            if buffered + self._pending_size + size > limit:
                return False
            pending.append(frame)
            self._pending_size += size
            return True
        if buffered + size > limit:
            return False
        batch = self._batch
        if batch.held:
            self._pending = [frame]
            self._pending_size = size
            batch.defer(self)
            return True
        transport.write(frame)
        written = self.written = self.written + size  # _wrote, inlined: this runs once per member
        if written - self._delivered >= UNCONFIRMED_BYTES:
            self._connection.next_scan = 0.0
        return True

    def _wrote(self, size: int) -> None:
        written = self.written = self.written + size
        if written - self._delivered >= UNCONFIRMED_BYTES:
            self._connection.next_scan = 0.0  # enough unconfirmed to ask the kernel at the next scan

    def grant(self, extra: int) -> None:
        """Raise the bound by ``extra`` until the heartbeat finds the buffer back within it."""
        self._allowance += extra
        self._connection.next_scan = 0.0

    def flush_held(self) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        self._pending_size = 0
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        transport.write(data)
        self._wrote(len(data))

    def is_stalled(self, now: float) -> bool:
        transport = self._transport
        if transport is None:
            return False
        buffered = transport.get_write_buffer_size()
        if self._allowance and buffered + self._pending_size <= self._max_buffered:
            self._allowance = 0  # drained back within the bound: a granted burst (a replay) is over
        # The kernel's queue counts too: bytes that fit in it would otherwise never time out.
        return self.stalled(now, buffered, self._socket, self._send_timeout)

    def quiet_until(self, now: float) -> float:
        transport = self._transport
        if transport is None or self._allowance or self._pending is not None:
            return 0.0
        return self.unwatched_until(now, transport.get_write_buffer_size(), self._send_timeout)

    @property
    def stall_cause(self) -> str:
        return "send_timeout"

    @property
    def drained(self) -> bool:
        return True

    def abort(self) -> None:
        """Drop the socket without a close frame (a client that does not read; RFC 6455 §7.1.7,
        "Fail the WebSocket Connection")."""
        self._pending = None  # nothing held goes out any more
        self._end()
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self.flush_held()  # held frames (e.g. a Close message) go out before the close frame
        self._end()  # the read loop sends the Close frame (see the module's rule)

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()  # aiohttp's receive() gives up its wait cleanly; the read loop closes


async def serve_websocket(
    request: web.Request,
    connection: HttpConnection,
    manager: ConnectionManager,
    *,
    batch: WriteBatch,
    max_frame_size: int,
    max_buffered: int,
    send_timeout: float,
    compress: bool,
    send_buffer: int = 0,
) -> web.WebSocketResponse:
    """Run one WebSocket for ``connection`` until either side ends it. ``send_buffer``: the socket's
    ``SO_SNDBUF`` (0: the kernel's own, growing, default)."""
    sink = WebSocketSink(
        request.transport,
        connection,
        batch=batch,
        max_buffered=max_buffered,
        send_timeout=send_timeout,
    )
    # Installed before prepare: from the 101 on, every byte the client sends passes the check first.
    if sink.feed(pipelined_bytes(request)) >= 0:
        sink.on_unmasked()  # an unmasked frame sent along with the upgrade request
    if request.transport is not None:
        sink.install(request.transport)
    ws = web.WebSocketResponse(
        autoping=True,
        compress=compress,
        max_msg_size=max_frame_size,
        decode_text=False,
        timeout=_CLOSE_TIMEOUT,
    )
    await ws.prepare(request)
    bound_send_buffer(socket_of(request.transport), send_buffer)
    sink.opened()
    # Logs of the hub handling this socket name the connection: bound around each call into it, not
    # for the socket's whole life (a binding held is ~0.25 KB per connection, issue 12).
    connection_id = connection.connection_id
    bound = bind_contextvars(connectionId=connection_id)
    try:
        await manager.attach_and_deliver(connection, Transport.WEBSOCKETS, sink)
    finally:
        reset_contextvars(**bound)
    del bound
    graceful = False
    oversized = False
    try:
        task = asyncio.current_task()
        while not sink.failed and not sink.ended:
            sink.reading(task)
            try:
                message = await ws.receive()
            except asyncio.CancelledError:
                if task is None or not sink.interrupted(task):
                    raise
                break  # the server ended the socket: close it below
            finally:
                sink.reading(None)
            if sink.failed:
                break  # an unmasked frame came: nothing more reaches the hub
            kind = message.type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                bound = bind_contextvars(connectionId=connection_id)
                try:
                    await manager.receive(connection, message.data)
                finally:
                    reset_contextvars(**bound)
                del bound
            elif kind is WSMsgType.CLOSE:
                graceful = True  # a Close frame is a deliberate goodbye: only a dropped socket may resume
                break
            else:
                if kind is WSMsgType.ERROR and getattr(message.data, "code", None) == _MESSAGE_TOO_BIG:
                    # aiohttp refused a frame over max_frame_size and closed with 1009: the client's
                    # fault, counted as a message over the limit is; the connection ends (no resume).
                    PROTOCOL_ERRORS.labels("too_large").inc()
                    log.info("connection.protocol_error", connectionId=connection_id, error=str(message.data))
                    oversized = True
                break  # CLOSED / ERROR: the socket dropped
            # The next receive() may wait for hours: this frame keeps nothing of the message before it
            # (~0.3 KB per idle connection, issue 12).
            del message
    finally:
        bound = bind_contextvars(connectionId=connection_id)  # cheaper than ``bound_contextvars``
        try:
            if (sink.failed or oversized) and connection.sink is sink:
                manager.dispose(connection, "protocol_error")
            else:
                # A dropped socket of a stateful connection waits for a resume; anything else ends it.
                manager.detach(connection, sink, keep_alive=connection.resumable and not graceful)
        finally:
            reset_contextvars(**bound)
        if not ws.closed:
            await _close(ws, sink)
        _forget_close_error(ws.exception())
    return ws


def _forget_close_error(error: BaseException | None) -> None:
    """Drop the traceback of the error aiohttp keeps on a socket that dropped (writing the Close frame
    to a reset socket fails, and ``WebSocketResponse`` stores the error): it holds the frame of
    ``close()``, which holds the response — a reference cycle of ~37 objects per dropped client that
    only a full collection frees, and that ``gc.freeze()`` keeps until a refreeze (issue 12,
    ``python -m bench.gc_pause``). Without the traceback, reference counting frees it all."""
    for _ in range(8):  # the error and what it was raised while handling
        if error is None:
            return
        error.__traceback__ = None
        error = error.__context__


async def _close(ws: web.WebSocketResponse, sink: WebSocketSink) -> None:
    """Send the Close frame and await the client's (``ws``'s timeout bounds the wait); a client that
    does not take even the Close frame within ``_CLOSE_TIMEOUT`` loses the socket without one."""
    try:
        await asyncio.wait_for(ws.close(), _CLOSE_TIMEOUT)
    except (TimeoutError, ConnectionError):
        sink.abort()
