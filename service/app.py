"""``create_app(settings)``: wiring only — routes, shared objects, and resources with a lifetime.

Resources live in ``cleanup_ctx`` (started in order, stopped in reverse): auth keys, the heartbeat,
the RabbitMQ consumer. Shutdown (``service.shutdown``): refuse new connections, stop consuming and
finish in-flight messages (nothing is acked that was not handed off), tell every client to reconnect
elsewhere (a SignalR ``Close`` with ``allowReconnect``, HubProtocol.md), then close the broker
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from config.settings import Settings
from consumers import EventConsumer
from consumers.ports import EventLog
from service import shutdown
from service.auth import build_auth
from service.connections import ConnectionManager
from service.cors import CorsPolicy
from service.devtools import install_dev_routes
from service.gc_freeze import HeapFreezer
from service.gc_probe import ForkedGcProbe, can_fork
from service.health import HealthRoutes
from service.hub import (
    EventJournal,
    History,
    HubConnectionHandler,
    HubMethods,
    HubOptions,
    InMemoryHubLifetimeManager,
    RecommendationsHub,
)
from service.loop_lag import sample_loop_lag
from service.metrics import EVENT_LOOP_LAG, GC_COLLECTIONS, GC_FREEZES, GC_PAUSE
from service.runtime import HUB, Consumer, HubRuntime
from service.transports import EndpointOptions, HubEndpoint
from service.write_batch import WriteBatch

__all__ = ["ConsumerFactory", "create_app"]

log = structlog.get_logger(__name__)

_HEARTBEAT_INTERVAL = 1.0  # HttpConnectionManager._heartbeatTickRate
# Connections one heartbeat step visits at most; a round of about a second is split into as many
# steps as that takes, at most _HEARTBEAT_MAX_STEPS. A step is one synchronous stretch of the loop,
# and every delivery due meanwhile waits: steps of 500 took up to 3-5 ms on a loaded 2-core box and
# set the loop-lag p99 (2.9-3.8 ms) at 10,000 connections; steps of 125, under 1 ms at p99, gave
# 1.8 ms and a lower delivery max, for the same CPU (issue 12, bench/NOTES.md "sixth pass").
_HEARTBEAT_SLICE = 125
_HEARTBEAT_MAX_STEPS = 200


def heartbeat_steps(connections: int) -> int:
    """Steps of one heartbeat round over ``connections``: each visits at most ``_HEARTBEAT_SLICE``."""
    return max(1, min(_HEARTBEAT_MAX_STEPS, -(-connections // _HEARTBEAT_SLICE)))


ConsumerFactory = Callable[[Settings, EventLog, WriteBatch], Consumer]


def _event_consumer(settings: Settings, event_log: EventLog, batch: WriteBatch) -> Consumer:
    def on_fatal(error: Exception) -> None:
        # A configuration the broker refuses (e.g. the queue exists with other arguments): retrying
        # cannot help. Stay up for the hub, report not-ready, and say what to fix.
        log.critical("broker.configuration_error", error=str(error))

    return EventConsumer(
        settings,
        event_log,
        heartbeat_seconds=settings.broker_heartbeat_seconds,
        reconnect_interval_seconds=settings.broker_reconnect_interval_seconds,
        watchdog_interval_seconds=settings.consumer_watchdog_interval_seconds,
        first_delivery_timeout_seconds=settings.stream_attach_timeout_seconds,
        on_fatal=on_fatal,
        writes=batch,
    )


def create_app(
    settings: Settings, *, consumer_factory: ConsumerFactory | bool | None = True
) -> web.Application:
    """Build the application. ``consumer_factory=False`` runs the hub alone (tests, benchmarks)."""
    factory: ConsumerFactory | None
    if consumer_factory is True:
        factory = _event_consumer
    elif consumer_factory is False or consumer_factory is None:
        factory = None
    else:
        factory = consumer_factory

    endpoint_options = EndpointOptions.from_settings(settings)
    # A POST may batch several records; each record is still held to HUB_MAX_RECEIVE_MESSAGE_SIZE.
    # No refusal middleware: the endpoint answers its refusals itself (a middleware's frame would stay
    # alive under every WebSocket).
    app = web.Application(client_max_size=endpoint_options.max_frame_size)
    # Built now, loaded at startup (auth_ctx): no request ever sees auth or the endpoint missing.
    auth = build_auth(settings)
    lifetime = InMemoryHubLifetimeManager()
    history = History(
        max_entries=settings.history_max_entries,
        max_bytes=settings.history_max_bytes,
        max_age_seconds=settings.history_window_seconds,
    )
    journal = EventJournal(
        lifetime,
        history,
        replay_cap=settings.replay_max_events,
        resume_wait_seconds=settings.resume_wait_seconds,
        close_positioned=lambda reason: handler.close_positioned(reason),
    )
    handler = HubConnectionHandler(
        HubMethods.of(RecommendationsHub(auth.policy, journal)),
        options=HubOptions.from_settings(settings),
        lifetime=lifetime,
    )
    manager = ConnectionManager(
        handler,
        disconnect_timeout=settings.hub_disconnect_timeout,
        max_connections=settings.hub_max_connections,
    )
    batch = WriteBatch()  # the consumer holds it while it drains a backlog; WebSocket sinks defer into it
    endpoint = HubEndpoint(manager, auth.validator, endpoint_options, batch=batch, tickets=auth.tickets)
    health = HealthRoutes({})
    runtime = HubRuntime(
        settings=settings,
        auth=auth,
        handler=handler,
        lifetime=lifetime,
        journal=journal,
        manager=manager,
        batch=batch,
        endpoint=endpoint,
        health=health,
    )
    app[HUB] = runtime
    health.add_check("accepting_connections", lambda: runtime.accepting)
    app.add_routes(health.routes())
    # The JS client given a hub URL ending in "/" negotiates at ".../negotiate" and connects at ".../"
    # (HttpConnection's URL resolution), so the connection endpoint answers on both spellings; and
    # in any letter case, as ASP.NET Core's routing matches.
    spellings = (f"{settings.hub_path}/negotiate", settings.hub_path, f"{settings.hub_path}/")
    hub_paths = tuple(_any_case(path) for path in spellings)
    CorsPolicy(frozenset(settings.cors_origins)).install(app, paths=hub_paths)

    async def auth_ctx(app: web.Application) -> AsyncIterator[None]:
        await auth.start()
        yield
        await auth.close()

    async def heartbeat_ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_heartbeat(runtime), name="hub-heartbeat")
        runtime.accepting = True
        yield
        runtime.accepting = False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        manager.dispose_all()

    async def loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
        interval = settings.event_loop_lag_interval_seconds
        if interval <= 0:
            yield
            return
        task = asyncio.create_task(sample_loop_lag(interval, EVENT_LOOP_LAG.observe), name="loop-lag")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def consumer_ctx(app: web.Application) -> AsyncIterator[None]:
        if factory is None:
            yield
            return
        consumer = runtime.consumer = factory(settings, journal, batch)
        journal.loader = consumer  # a Resume waits while the consumer loads the history
        health.add_check("broker_connected", lambda: consumer.is_connected)
        # Connected is not enough: a consumer the broker keeps refusing (a stream whose home node is
        # down) delivers nothing while the link is up; such an instance leaves the rotation.
        health.add_check("consuming", lambda: consumer.is_consuming)
        health.add_check("history_loaded", lambda: consumer.is_caught_up)
        await consumer.start()
        yield
        await consumer.stop()  # idempotent: normally already stopped in on_shutdown

    async def on_shutdown(app: web.Application) -> None:
        await shutdown.begin(runtime)  # already done when service.serving drained before

    app.router.add_route("*", hub_paths[0], endpoint.negotiate)
    for path in hub_paths[1:]:
        app.router.add_route("*", path, endpoint.connect)
    app.cleanup_ctx.append(auth_ctx)
    app.cleanup_ctx.append(loop_lag_ctx)
    app.cleanup_ctx.append(heartbeat_ctx)
    app.cleanup_ctx.append(consumer_ctx)
    app.on_shutdown.append(on_shutdown)
    if auth.dev_keys is not None:  # dev JWKS, dev tokens and the console; in production these are 404
        install_dev_routes(app, settings, auth.dev_keys)
    return app


def _any_case(path: str) -> str:
    """An aiohttp route pattern matching ``path`` in any letter case (one regex variable holds it)."""
    return "/{hub_path:(?i:" + re.escape(path.removeprefix("/")) + ")}"


async def _heartbeat(runtime: HubRuntime) -> None:
    """One loop drives every timer: pings, timeouts, token expiry, stale and slow connections, and
    the checkpoints of connections that track positions.

    Every connection is visited about once a second, in slices spread over that second: one pass
    over all of them at once held the loop ~20 ms with 10,000 connections, and every delivery
    queued behind it waited as long (issue 12).
    """
    loop = asyncio.get_running_loop()
    next_checkpoint = loop.time()
    handler, manager = runtime.handler, runtime.manager
    GC_COLLECTIONS.install()  # process-wide, as the collector is; stays for the process's lifetime
    freezer = _heap_freezer(runtime.settings)
    try:
        while True:
            steps = heartbeat_steps(max(len(handler), len(manager)))
            for step in range(steps):
                await asyncio.sleep(_HEARTBEAT_INTERVAL / steps)
                try:
                    handler.tick(step, steps)
                    manager.scan(step, steps)
                except Exception:
                    log.exception("heartbeat.failed")
            try:
                if freezer is not None:
                    _after_round(freezer, len(handler), handler.closed_total)
                if loop.time() >= next_checkpoint:
                    next_checkpoint = loop.time() + runtime.settings.checkpoint_interval_seconds
                    runtime.journal.checkpoint()
            except Exception:
                log.exception("heartbeat.failed")
    finally:
        if freezer is not None:
            freezer.close()


def _heap_freezer(settings: Settings) -> HeapFreezer | None:
    if not settings.gc_freeze:
        return None
    probe = ForkedGcProbe() if settings.gc_freeze_probe and can_fork() else None
    return HeapFreezer(probe=probe, watch=GC_COLLECTIONS)


def _after_round(freezer: HeapFreezer, connections: int, closed_total: int) -> None:
    action = freezer.after_round(connections, closed_total)
    if action is None:
        return
    GC_FREEZES.labels(action).inc()
    GC_PAUSE.labels(action).observe(freezer.last_pause)
    pause_ms = round(freezer.last_pause * 1000, 1)  # what this round held the loop
    if action in ("freeze", "tail", "fork", "survivors"):
        log.info("gc.frozen", action=action, connections=connections, pause_ms=pause_ms)
    else:  # what the full pass, or the probe's pass in a copy of the process, found
        found: dict[str, object] = {"collected": freezer.last_collected}
        if freezer.last_garbage_types:
            found["garbage_types"] = dict(freezer.last_garbage_types)
        log.info("gc.frozen", action=action, connections=connections, pause_ms=pause_ms, **found)
