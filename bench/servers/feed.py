"""The aio-pika consumer that feeds the comparison servers, the same kind as the service's.

One queue bound with ``#`` to the benchmark's exchange, per-consumer prefetch, strict queue order (a
single worker drains an in-memory inbox), and ack after hand-off — but one ``basic.ack`` with
``multiple=True`` per drained batch instead of one per message, so the floor is the best this stack
can do.

``--keep-stream NAME``: a stream declared as ``--stream`` declares its queue, bound to the same exchange and
never read: the broker writes every event twice, as it does for the service, which keeps that stream
as its log, while this server reads the classic queue. What a design costs that reads live events from
a classic queue and keeps the stream only for resuming (``raw-logged`` in ``bench``).

``--stream``: the queue is a RabbitMQ stream read from ``next``, as the service reads its source
(durable, the service's default retention, prefetch 1,000 = its ``PREFETCH_COUNT``, credit by an
``ack(multiple=True)`` every half window and whenever the inbox empties). A stream costs the broker
about twice the CPU of a classic queue at the same rate; this floor shows what that leaves a server.
A stream is durable and outlives its consumer: whoever names it deletes it (the benchmark does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bench.wire import raise_fd_limit
from service.loop_lag import LAG_BUCKETS, sample_loop_lag

__all__ = ["Feed", "add_feed_arguments", "attach_feed", "default_stream_arguments", "run_server"]

Handler = Callable[[bytes], Awaitable[None] | None]

CLASSIC_PREFETCH = 100
STREAM_PREFETCH = 1000  # the service's PREFETCH_COUNT default


def add_feed_arguments(parser: object) -> None:
    add = parser.add_argument  # type: ignore[attr-defined]
    add("--host", default="127.0.0.1")
    add("--port", type=int, required=True)
    add("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    add("--exchange", required=True)
    add("--queue", required=True)
    add("--prefetch", type=int, help=f"default {CLASSIC_PREFETCH}; with --stream {STREAM_PREFETCH}")
    add("--stream", action="store_true", help="read a RabbitMQ stream (as the service does), not a queue")
    add("--keep-stream", metavar="NAME", help="also bind a stream NAME to the exchange, never read")


def default_stream_arguments() -> dict[str, Any]:
    """A stream declared as the service declares its own with the default settings: so that a stream
    left behind by a killed run stays bounded by the same retention."""
    from broker.topology import stream_arguments
    from config.settings import Settings

    fields = Settings.model_fields
    return stream_arguments(
        max_age=fields["stream_max_age"].default,
        max_bytes=fields["stream_max_bytes"].default,
        segment_bytes=fields["stream_segment_bytes"].default,
    )


class Feed:
    """Consume ``queue`` (declared here, bound to ``exchange``) and call ``handler(body)`` in order."""

    def __init__(
        self,
        url: str,
        exchange: str,
        queue: str,
        prefetch: int | None,
        handler: Handler,
        *,
        stream: bool = False,
        keep_stream: str | None = None,
    ) -> None:
        self._url = url
        self._keep_stream = keep_stream
        self._exchange = exchange
        self._queue = queue
        self._stream = stream
        self._prefetch = prefetch or (STREAM_PREFETCH if stream else CLASSIC_PREFETCH)
        # A classic queue never has more than the window unacked: one ack per drained batch. A stream
        # delivers whole chunks and may overshoot the window: credit every half window as well.
        self._ack_every = max(1, self._prefetch // 2) if stream else self._prefetch
        self._handler = handler
        self._inbox: deque[AbstractIncomingMessage] = deque()
        self._wake = asyncio.Event()
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._connection = connection = await aio_pika.connect_robust(self._url)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        exchange = await channel.declare_exchange(self._exchange, aio_pika.ExchangeType.TOPIC, durable=True)

        async def stream(name: str) -> aio_pika.abc.AbstractQueue:
            # No auto-delete, no x-expires on a stream: the benchmark deletes it.
            declared = await channel.declare_queue(name, durable=True, arguments=default_stream_arguments())
            await declared.bind(exchange, routing_key="#")
            return declared

        if self._stream:
            queue = await stream(self._queue)
        else:
            queue = await channel.declare_queue(
                self._queue, auto_delete=True, arguments={"x-expires": 60_000}
            )
            await queue.bind(exchange, routing_key="#")
        if self._keep_stream is not None:
            await stream(self._keep_stream)
        self._worker = asyncio.create_task(self._work())
        await queue.consume(self._on_message, arguments={"x-stream-offset": "next"} if self._stream else None)

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._connection is not None:
            await self._connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._inbox.append(message)
        self._wake.set()

    async def _work(self) -> None:
        inbox = self._inbox
        handler = self._handler
        ack_every = self._ack_every
        while True:
            await self._wake.wait()
            self._wake.clear()
            last: AbstractIncomingMessage | None = None
            unacked = 0
            while inbox:
                last = inbox.popleft()
                result = handler(last.body)
                if result is not None:
                    await result
                unacked += 1
                if unacked >= ack_every:
                    await last.ack(multiple=True)
                    last, unacked = None, 0
            if last is not None:
                await last.ack(multiple=True)


LAG_INTERVAL = 0.05  # the service's default EVENT_LOOP_LAG_INTERVAL_SECONDS


def attach_feed(app: web.Application, feed: Feed) -> None:
    """Run ``feed`` for the application's lifetime (started on startup, stopped on cleanup), and
    sample the event loop's lag as the service does, into ``GET /metrics`` (its own registry)."""
    registry = CollectorRegistry()
    lag = Histogram(
        "realtime_event_loop_lag_seconds", "Event-loop lag.", buckets=LAG_BUCKETS, registry=registry
    )

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    async def feed_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        sampler = asyncio.create_task(sample_loop_lag(LAG_INTERVAL, lag.observe))
        await feed.start()
        yield
        await feed.stop()
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler

    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(feed_ctx)


def run_server(prog: str, build_app: Callable[[argparse.Namespace], web.Application]) -> None:
    """The common ``main`` of the comparison servers: arguments, fd limit, uvloop, serve."""
    parser = argparse.ArgumentParser(prog=prog)
    add_feed_arguments(parser)
    args = parser.parse_args()
    raise_fd_limit()
    import uvloop

    uvloop.install()
    web.run_app(build_app(args), host=args.host, port=args.port, print=None, access_log=None)
