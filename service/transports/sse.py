"""Server-Sent Events transport: server → client over one streaming response (text only).

TransportProtocols.md, "Server-Sent Events": the client opens ``GET`` with
``Accept: text/event-stream`` and sends with ``POST``; closing the EventSource (dropping the stream)
ends the connection. Each flush of pending bytes becomes one event (ASP.NET
``ServerSentEventsMessageFormatter``).

Rule: the hub's writes go into a bounded ``Outbox``; only this request's task awaits the socket, with
the send timeout, so a stuck client costs nobody else anything.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from config.settings import Transport
from service.connections import Capabilities, ConnectionManager, HttpConnection, Outgoing
from service.protocol import TRANSFER_FORMATS

from .outbox import Outbox

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
    __slots__ = ("_send_timeout", "last_progress", "outbox")

    capabilities = CAPABILITIES

    def __init__(self, *, max_buffered: int, send_timeout: float, now: float) -> None:
        self.outbox = Outbox(max_buffered)
        self._send_timeout = send_timeout
        self.last_progress = now

    def write(self, out: Outgoing) -> bool:
        return self.outbox.put(out.payload)

    def grant(self, extra: int) -> None:
        self.outbox.grant(extra)

    def is_stalled(self, now: float) -> bool:
        self.outbox.settle()
        # The writer task flushes as soon as data arrives; data still waiting this long means the
        # socket stopped draining (the write itself is also bounded by the send timeout).
        if self.outbox.size == 0:
            self.last_progress = now
            return False
        return now - self.last_progress > self._send_timeout

    def close(self) -> None:
        self.outbox.close()

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
) -> web.StreamResponse:
    sink = ServerSentEventsSink(max_buffered=max_buffered, send_timeout=send_timeout, now=time.monotonic())
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
                await asyncio.wait_for(response.write(format_event(data)), send_timeout)
                sink.last_progress = time.monotonic()
            if outbox.closed:
                break
    except (ConnectionError, TimeoutError):
        pass  # the client went away or stopped reading; detach below ends the connection
    finally:
        manager.detach(connection, sink, keep_alive=False)
    return response
