"""``create_app(settings)``: wiring only — routes, shared objects, and resources with a lifetime.

Resources live in ``cleanup_ctx`` (started in order, stopped in reverse): auth keys, the heartbeat,
the RabbitMQ consumer. Shutdown follows the issue's order: stop consuming and finish in-flight
messages, tell every client to reconnect elsewhere (SignalR Close with ``allowReconnect``), then close
the broker connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
from aiohttp import web

from config.settings import Settings
from consumers import EventConsumer
from consumers.ports import GroupSender
from service.auth import AuthComponents, GroupPolicy, create_auth
from service.connections import ConnectionManager
from service.cors import CorsPolicy
from service.health import HealthRoutes
from service.hub import HubConnectionHandler, HubOptions, recommendations_hub
from service.transports import EndpointOptions, HubEndpoint, refusal_middleware

__all__ = ["HUB", "Consumer", "ConsumerFactory", "HubRuntime", "create_app"]

log = structlog.get_logger(__name__)

_HEARTBEAT_INTERVAL = 1.0  # HttpConnectionManager._heartbeatTickRate


class Consumer(Protocol):
    """What the app needs from a broker consumer (``consumers.EventConsumer`` provides it)."""

    @property
    def is_connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ConsumerFactory = Callable[[Settings, GroupSender], Consumer]


@dataclass(slots=True)
class HubRuntime:
    """The live objects of one app, for the entry point, tests and the dev console."""

    settings: Settings
    handler: HubConnectionHandler
    manager: ConnectionManager
    health: HealthRoutes
    auth: AuthComponents | None = None
    endpoint: HubEndpoint | None = None
    consumer: Consumer | None = None
    accepting: bool = False

    def require_endpoint(self) -> HubEndpoint:
        if self.endpoint is None:
            raise web.HTTPServiceUnavailable(text="starting up")
        return self.endpoint


HUB = web.AppKey("hub", HubRuntime)


def _event_consumer(settings: Settings, sender: GroupSender) -> Consumer:
    def on_fatal(error: Exception) -> None:
        # A configuration the broker refuses (e.g. the queue exists with other arguments): retrying
        # cannot help. Stay up for the hub, report not-ready, and say what to fix.
        log.critical("broker.configuration_error", error=str(error))

    return EventConsumer(
        settings,
        sender,
        heartbeat_seconds=settings.broker_heartbeat_seconds,
        reconnect_interval_seconds=settings.broker_reconnect_interval_seconds,
        watchdog_interval_seconds=settings.consumer_watchdog_interval_seconds,
        on_fatal=on_fatal,
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
    app = web.Application(client_max_size=endpoint_options.max_frame_size, middlewares=[refusal_middleware])
    handler = HubConnectionHandler(
        recommendations_hub,
        options=HubOptions.from_settings(settings),
        policy=GroupPolicy(),  # replaced by the configured policy once auth is loaded
    )
    manager = ConnectionManager(
        handler,
        disconnect_timeout=settings.hub_disconnect_timeout,
        max_connections=settings.hub_max_connections,
    )
    handler.bind(manager)
    health = HealthRoutes({})
    runtime = HubRuntime(settings=settings, handler=handler, manager=manager, health=health)
    app[HUB] = runtime
    health.add_check("accepting_connections", lambda: runtime.accepting)
    app.add_routes(health.routes())
    CorsPolicy(frozenset(settings.cors_origins)).install(app)

    async def auth_ctx(app: web.Application) -> AsyncIterator[None]:
        runtime.auth = auth = await create_auth(settings)
        handler.policy = auth.policy
        runtime.endpoint = HubEndpoint(manager, auth.validator, endpoint_options)
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

    async def consumer_ctx(app: web.Application) -> AsyncIterator[None]:
        if factory is None:
            yield
            return
        consumer = runtime.consumer = factory(settings, handler.lifetime)
        health.add_check("broker_connected", lambda: consumer.is_connected)
        await consumer.start()
        yield
        await consumer.stop()  # idempotent: normally already stopped in on_shutdown

    async def on_shutdown(app: web.Application) -> None:
        runtime.accepting = False
        if runtime.consumer is not None:
            await runtime.consumer.stop()
        log.info("shutdown.closing_connections", connections=len(handler))
        handler.close_all(allow_reconnect=True, reason="shutdown")

    async def negotiate(request: web.Request) -> web.StreamResponse:
        return await runtime.require_endpoint().negotiate(request)

    async def connect(request: web.Request) -> web.StreamResponse:
        return await runtime.require_endpoint().connect(request)

    app.router.add_route("*", f"{settings.hub_path}/negotiate", negotiate)
    app.router.add_route("*", settings.hub_path, connect)
    app.cleanup_ctx.append(auth_ctx)
    app.cleanup_ctx.append(heartbeat_ctx)
    app.cleanup_ctx.append(consumer_ctx)
    app.on_shutdown.append(on_shutdown)
    if settings.auth_dev_mode:  # dev JWKS, dev tokens and the console; in production these are 404
        from service.devtools import install_dev_routes

        install_dev_routes(app, runtime)
    return app


async def _heartbeat(runtime: HubRuntime) -> None:
    """One loop drives every timer: pings, timeouts, token expiry, stale and slow connections."""
    while True:
        await asyncio.sleep(_HEARTBEAT_INTERVAL)
        try:
            runtime.handler.tick()
            runtime.manager.scan()
        except Exception:
            log.exception("heartbeat.failed")
