"""The goodbye of one app: what SIGTERM does to the hub, in order, whoever runs the server.

1. Refuse what is new: ``/readyz`` turns 503 (the balancer stops sending), negotiates and new
   connections get 503.
2. Stop consuming and finish the entry in hand; clients with positions get a final ``Checkpoint``.
3. Every connection gets ``Close`` with ``allowReconnect: true`` (HubProtocol.md, "Close"): a
   WebSocket or SSE client at once; a long-polling client with its next poll.
4. ``drain``: the listener stays open until every long-polling client has collected its Close, at most
   ``HUB_SHUTDOWN_DRAIN_SECONDS``; those that never came are counted
   (``realtime_hub_shutdown_unfinished_total``) and logged.

Rule: ``begin`` runs once (the app's ``on_shutdown`` calls it too, for servers that skip ``drain``,
e.g. the tests' in-process runner); ``service.serving`` runs both before it closes the listener.
"""

from __future__ import annotations

import asyncio

import structlog

from service.metrics import SHUTDOWN_UNFINISHED
from service.runtime import HubRuntime

__all__ = ["begin", "drain"]

log = structlog.get_logger(__name__)

# How often the drain looks whether the last long-polling clients have collected their Close: their
# polls are requests of their own, and a few checks a second cost nothing for at most a few seconds.
_DRAIN_CHECK_INTERVAL = 0.02
_IDS_LOGGED = 20  # connection ids in the shutdown.unfinished line (with the count of all)


async def begin(runtime: HubRuntime, *, consumer_timeout: float | None = None) -> None:
    """Steps 1–3 (idempotent). ``consumer_timeout``: the consumer's part of the shutdown bound."""
    if runtime.shutting_down:
        return
    runtime.shutting_down = True
    runtime.accepting = False
    runtime.endpoint.stop_accepting()
    if runtime.consumer is not None:
        await runtime.consumer.stop(consumer_timeout)
    # Clients with positions learn how far they got before the Close sends them elsewhere.
    runtime.journal.checkpoint(force=True)
    log.info("shutdown.closing_connections", connections=len(runtime.handler))
    runtime.handler.close_all(allow_reconnect=True, reason="shutdown")


async def drain(runtime: HubRuntime, bound: float) -> int:
    """Step 4: wait (at most ``bound`` seconds) until every Close has been collected; returns how
    many were not (and counts and logs them)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    manager = runtime.manager
    waiting = manager.undelivered()
    if waiting:
        log.info("shutdown.draining", connections=len(waiting), boundSeconds=bound)
    while waiting and loop.time() < deadline:
        await asyncio.sleep(_DRAIN_CHECK_INTERVAL)
        waiting = manager.undelivered()
    for connection in waiting:
        transport = connection.transport.value if connection.transport else "none"
        SHUTDOWN_UNFINISHED.labels(transport).inc()
    if waiting:
        log.warning(
            "shutdown.unfinished",
            connections=len(waiting),
            # The first few: one line held every id (470 KB at 19,600 connections).
            connectionIds=[connection.connection_id for connection in waiting[:_IDS_LOGGED]],
            boundSeconds=bound,
        )
    return len(waiting)
