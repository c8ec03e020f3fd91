"""The live objects of one app (``app[HUB]``), for the entry point, the dev routes and tests.

Every field but ``consumer`` exists from the moment ``create_app`` returns: auth is built, not yet
loaded, until the app's startup loads it (before the first request is served).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from config.settings import Settings
from service.auth import AuthComponents
from service.connections import ConnectionManager
from service.health import HealthRoutes
from service.hub import EventJournal, HubConnectionHandler, InMemoryHubLifetimeManager
from service.transports import HubEndpoint
from service.write_batch import WriteBatch

__all__ = ["HUB", "Consumer", "HubRuntime"]


class Consumer(Protocol):
    """What the app needs from a broker consumer (``consumers.EventConsumer`` provides it)."""

    @property
    def is_connected(self) -> bool: ...

    @property
    def is_consuming(self) -> bool: ...

    @property
    def is_caught_up(self) -> bool: ...

    async def wait_caught_up(self) -> None: ...

    async def start(self) -> None: ...

    async def stop(self, timeout: float | None = None) -> None: ...


@dataclass(slots=True)
class HubRuntime:
    """What ``create_app`` built; ``consumer`` is set at startup when the app has one."""

    settings: Settings
    auth: AuthComponents
    handler: HubConnectionHandler
    lifetime: InMemoryHubLifetimeManager
    journal: EventJournal
    manager: ConnectionManager
    batch: WriteBatch
    endpoint: HubEndpoint
    health: HealthRoutes
    consumer: Consumer | None = None
    accepting: bool = False
    shutting_down: bool = False  # SIGTERM seen: see service.shutdown


HUB = web.AppKey("hub", HubRuntime)
