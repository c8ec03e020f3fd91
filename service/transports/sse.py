"""Server-Sent Events transport: server → client over one streaming response (text only).

TransportProtocols.md, "Server-Sent Events": the client opens ``GET`` with
``Accept: text/event-stream`` and sends with ``POST``; closing the EventSource (dropping the stream)
ends the connection. Each flush of pending bytes becomes one event (ASP.NET
``ServerSentEventsMessageFormatter``).

Rule: the hub's writes go into a bounded ``Outbox``; only this request's task awaits the socket, with
the send timeout, so a stuck client costs nobody else anything. A client that stops reading is
dropped as slow (``ConnectionManager.drop_slow``) by whichever notices first: the outbox bound, the
write's timeout, or the heartbeat finding queued bytes (the kernel's included) without progress.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from config.settings import Transport
from service.connections import Capabilities, ConnectionManager, HttpConnection, Outgoing
from service.protocol import TRANSFER_FORMATS

from .outbox import Outbox
from .sockets import StallWatch, bound_send_buffer, socket_of

__all__ = ["ServerSentEventsSink", "format_event", "serve_server_sent_events"]

_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache, no-store",
    "Pragma": "no-cache",
    # No compression and no proxy buffering: events must reach the browser as they are written.
    "Content-Encoding": "identity",
    "X-Accel-Buffering": "no",
}


def format_event(payload: bytes) -> bytes:
    """One SSE event carrying ``payload`` (which may hold several records)."""
    if b"\n" not in payload:
        return b"data: " + payload + b"\r\n\r\n"
    lines = [line.removesuffix(b"\r") for line in payload.split(b"\n")]
    return b"".join(b"data: " + line + b"\r\n" for line in lines) + b"\r\n"


CAPABILITIES = Capabilities(
    transfer_formats=TRANSFER_FORMATS[Transport.SERVER_SENT_EVENTS], resumable=False, needs_keep_alive=True
)


class ServerSentEventsSink:
    __slots__ = ("_send_timeout", "_socket", "_transport", "_watch", "outbox")

    capabilities = CAPABILITIES

    def __init__(
        self, *, max_buffered: int, send_timeout: float, transport: asyncio.Transport | None = None
    ) -> None:
        self.outbox = Outbox(max_buffered)
        self._send_timeout = send_timeout
        self._transport = transport
        self._socket = socket_of(transport)
        self._watch = StallWatch()  # bytes handed to the response vs. bytes still queued

    def write(self, out: Outgoing) -> bool:
        return self.outbox.put(out.payload)

    def grant(self, extra: int) -> None:
        self.outbox.grant(extra)

    def wrote(self, size: int) -> None:
        """The writer task handed ``size`` bytes to the response."""
        self._watch.written += size

    def quiet_until(self, now: float) -> float:
        return 0.0  # asked every heartbeat round

    def is_stalled(self, now: float) -> bool:
        self.outbox.settle()
        # The writer task takes the outbox as soon as data arrives and blocks in the response's write
        # (bounded by the send timeout) once the transport's buffer is full; what waits in the
        # transport's buffer and the kernel's counts, so bytes that fit there time out too.
        transport = self._transport
        buffered = 0 if transport is None else transport.get_write_buffer_size()
        return self._watch.stalled(now, buffered, self._socket, self._send_timeout)

    @property
    def stall_cause(self) -> str:
        return "send_timeout"

    def close(self) -> None:
        self.outbox.close()

    def abort(self) -> None:
        self.outbox.close()
        self.outbox.take()  # nothing more goes out
        if self._transport is not None:
            self._transport.abort()

    @property
    def drained(self) -> bool:
        return True


async def serve_server_sent_events(
    request: web.Request,
    connection: HttpConnection,
    manager: ConnectionManager,
    *,
    max_buffered: int,
    send_timeout: float,
    send_buffer: int = 0,
) -> web.StreamResponse:
    """Stream to ``connection`` until either side ends it. ``send_buffer``: the socket's ``SO_SNDBUF``
    (0: the kernel's default)."""
    transport = request.transport
    bound_send_buffer(socket_of(transport), send_buffer)
    sink = ServerSentEventsSink(max_buffered=max_buffered, send_timeout=send_timeout, transport=transport)
    response = web.StreamResponse(status=200, headers=_HEADERS)
    await response.prepare(request)
    await manager.attach_and_deliver(connection, Transport.SERVER_SENT_EVENTS, sink)
    outbox = sink.outbox
    try:
        # ServerSentEventsServerTransport: an initial comment, flushed at once, so that browsers fire
        # 'open' (the JS client's start() waits for it).
        await response.write(b":\r\n")
        while True:
            await outbox.wait(None)
            data = outbox.take()
            if data:
                event = format_event(data)
                sink.wrote(len(event))
                await asyncio.wait_for(response.write(event), send_timeout)
            if outbox.closed:
                break
    except TimeoutError:
        # The response's write waited for the socket to drain longer than the send timeout.
        manager.drop_slow(connection, "send_timeout")
    except ConnectionError:
        pass  # the client went away; detach below ends the connection
    finally:
        manager.detach(connection, sink, keep_alive=False)
    return response
