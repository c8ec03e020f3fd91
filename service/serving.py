"""Serve one app on its TCP listener until SIGTERM/SIGINT, then shut down in an order that loses no
goodbye.

``web.run_app`` closes the listener first and only then runs the app's shutdown, so a long-polling
client between two polls found nothing to poll: "connection refused" instead of its ``Close``
(issue 11, B13). Here the order is ours:

1. ``service.shutdown.begin``: ``/readyz`` 503, new connections 503, stop consuming, a final
   ``Checkpoint`` for clients with positions, ``Close`` with ``allowReconnect`` to every connection;
2. ``service.shutdown.drain``: the listener stays open until every long-polling client has collected
   its Close, at most ``HUB_SHUTDOWN_DRAIN_SECONDS`` (nothing pending: no wait);
3. ``AppRunner.cleanup``: close the listener, wait for the remaining requests (WebSocket close
   handshakes, SSE streams) for what is left of ``SHUTDOWN_TIMEOUT_SECONDS`` (``shutdown_budgets``),
   then release resources (the broker connection last).

Rule: nothing else installs signal handlers or closes the listener.
"""

from __future__ import annotations

import asyncio
import signal

import structlog
from aiohttp import web

from config.settings import Settings
from service import shutdown
from service.app import create_app
from service.logs import RedactingAccessLogger
from service.runtime import HUB

__all__ = ["serve", "shutdown_budgets"]

_CLEANUP_AT_MOST = 2.0  # seconds for the last open requests, once every client was told to go


def shutdown_budgets(total: float, drain: float) -> tuple[float, float]:
    """Split SHUTDOWN_TIMEOUT_SECONDS: (stopping the consumer, closing what is left), around the drain.

    The three steps run one after the other, so their parts add up to ``total``: the consumer (which
    takes milliseconds when the broker answers, and its whole part when it does not) and the cleanup
    each got the whole bound before, and a hung broker made a shutdown last twice as long."""
    rest = total - drain  # > 0: the settings refuse a drain as long as the bound
    cleanup = min(_CLEANUP_AT_MOST, rest / 2)
    return rest - cleanup, cleanup


log = structlog.get_logger(__name__)


async def serve(settings: Settings, app: web.Application | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down (see the module's order); returns when done."""
    if app is None:
        app = create_app(settings)
    runtime = app[HUB]
    consumer_budget, cleanup_budget = shutdown_budgets(
        settings.shutdown_timeout_seconds, settings.hub_shutdown_drain_seconds
    )
    runner = web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,
        access_log_class=RedactingAccessLogger,
        shutdown_timeout=cleanup_budget,
    )
    await runner.setup()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum.name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        await site.start()
        await stop.wait()
        log.info("shutdown.signal", signal=received[0])
        await shutdown.begin(runtime, consumer_timeout=consumer_budget)
        await shutdown.drain(runtime, settings.hub_shutdown_drain_seconds)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await runner.cleanup()
