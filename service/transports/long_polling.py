"""Long Polling transport: server → client through a sequence of held GETs (text and binary).

TransportProtocols.md, "Long Polling", and ASP.NET ``LongPollingServerTransport``: the first poll
activates the connection and returns at once (200, empty); later polls are held until data arrives
(200 with every buffered byte) or the poll timeout passes (200, empty); 204 tells the client the
connection is over. A newer poll for the same connection completes the older one with 204. The
connection outlives each poll, so messages between polls wait in the bounded ``Outbox``; a client
that stops polling for DisconnectTimeout is cleaned up by the heartbeat.
"""

from __future__ import annotations

import time

from aiohttp import web

from config.settings import Transport
from service.connections import Capabilities, ConnectionManager, HttpConnection, Outgoing
from service.protocol import TRANSFER_FORMATS

from .outbox import Outbox

__all__ = ["LongPollingSink", "serve_final_poll", "serve_poll"]

_NO_CACHE = {
    "Cache-Control": "no-cache, no-store",
    "Pragma": "no-cache",
    "Expires": "Thu, 01 Jan 1970 00:00:00 GMT",
}


CAPABILITIES = Capabilities(
    transfer_formats=TRANSFER_FORMATS[Transport.LONG_POLLING], resumable=False, needs_keep_alive=False
)


class LongPollingSink:
    __slots__ = ("_disconnect_timeout", "generation", "last_poll_end", "outbox", "polling")

    capabilities = CAPABILITIES

    def __init__(self, *, max_buffered: int, disconnect_timeout: float, now: float) -> None:
        self.outbox = Outbox(max_buffered)
        self._disconnect_timeout = disconnect_timeout
        self.generation = 0
        self.polling = False
        self.last_poll_end = now

    def write(self, out: Outgoing) -> bool:
        return self.outbox.put(out.payload)

    def grant(self, extra: int) -> None:
        self.outbox.grant(extra)

    def quiet_until(self, now: float) -> float:
        return 0.0  # asked every heartbeat round

    def is_stalled(self, now: float) -> bool:
        self.outbox.settle()
        # HttpConnectionManager.Scan: a long-polling client that has not polled for DisconnectTimeout
        # is gone — slow, if messages wait for it (stall_cause).
        return not self.polling and now - self.last_poll_end > self._disconnect_timeout

    @property
    def stall_cause(self) -> str | None:
        return "not_polling" if self.outbox.size else None

    def close(self) -> None:
        self.outbox.close()

    def abort(self) -> None:
        self.outbox.close()
        self.outbox.take()  # a later poll finds nothing: 204

    @property
    def drained(self) -> bool:
        return self.outbox.size == 0


def serve_final_poll(manager: ConnectionManager, token: str, sink: object) -> web.Response:
    """A poll on a connection that already ended: hand over its last words (its Close), then 204."""
    if isinstance(sink, LongPollingSink) and sink.outbox.size:
        return _ok(sink.outbox.take())
    manager.forget_draining(token)
    return _terminated()


def _ok(body: bytes = b"") -> web.Response:
    return web.Response(status=200, body=body, content_type="application/octet-stream", headers=_NO_CACHE)


def _terminated() -> web.Response:
    return web.Response(status=204, headers=_NO_CACHE)


async def serve_poll(
    request: web.Request,
    connection: HttpConnection,
    manager: ConnectionManager,
    *,
    poll_timeout: float,
    max_buffered: int,
    disconnect_timeout: float,
) -> web.Response:
    sink = connection.sink
    if connection.transport is None:
        # HttpConnectionContext.TryActivateLongPollingConnection: the first poll starts the
        # connection and returns immediately with an empty 200.
        await manager.attach_and_deliver(
            connection,
            Transport.LONG_POLLING,
            LongPollingSink(
                max_buffered=max_buffered, disconnect_timeout=disconnect_timeout, now=time.monotonic()
            ),
        )
        return _ok()
    if not isinstance(sink, LongPollingSink):
        return _terminated()
    sink.generation += 1
    generation = sink.generation
    sink.polling = True
    sink.outbox.interrupt()  # an older poll still waiting completes with 204
    try:
        await sink.outbox.wait(poll_timeout)
        if sink.generation != generation:
            return _terminated()
        data = sink.outbox.take()
        if data:
            return _ok(data)
        if sink.outbox.closed:
            manager.forget_draining(connection.connection_token)
            return _terminated()
        return _ok()  # PollTimeout passed with nothing to say: the client polls again
    finally:
        if sink.generation == generation:
            sink.polling = False
            sink.last_poll_end = time.monotonic()
