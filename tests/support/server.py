"""Run the real service in the test's event loop on a free loopback port.

The app is the one ``python -m service`` runs (``create_app``), served by aiohttp's ``AppRunner`` with
the same options as production (``handler_cancellation``, redacting access log), so interop tests
drive exactly what ships.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from config.settings import Settings
from service.app import ConsumerFactory, create_app
from service.connections import HttpConnection
from service.logs import RedactingAccessLogger
from service.runtime import HUB, HubRuntime
from tests.support.tokens import TokenFactory

__all__ = ["RunningService", "dev_settings", "hub_settings", "running_service"]


def hub_settings(tokens: TokenFactory, **overrides: Any) -> Settings:
    """Settings for a test service that trusts ``tokens``' JWKS (``file://``)."""
    values: dict[str, Any] = {
        "http_host": "127.0.0.1",
        "http_port": 0,
        "auth_jwks_url": tokens.jwks_url,
        "auth_issuer": tokens.issuer,
        "auth_audience": tokens.audience,
        "cors_origins": ["http://localhost:3000"],
        "log_format": "console",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def dev_settings(key_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test service in development auth mode (its own key under ``key_dir``)."""
    values: dict[str, Any] = {
        "http_host": "127.0.0.1",
        "http_port": 0,
        "auth_dev_mode": True,
        "auth_dev_key_dir": key_dir,
        "cors_origins": ["http://localhost:3000"],
        "log_format": "console",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class RunningService:
    url: str  # http://127.0.0.1:PORT
    settings: Settings
    runtime: HubRuntime
    runner: web.AppRunner
    closed: asyncio.Queue[str] = field(default_factory=asyncio.Queue)  # connection ids, as they close

    async def next_closed(self, *, timeout: float = 10.0) -> str:
        """The id of the next connection to close (awaitable instead of polling the count)."""
        return await asyncio.wait_for(self.closed.get(), timeout)

    @property
    def hub_url(self) -> str:
        return f"{self.url}{self.settings.hub_path}"

    @property
    def ws_hub_url(self) -> str:
        return self.hub_url.replace("http://", "ws://", 1)


@contextlib.asynccontextmanager
async def running_service(
    settings: Settings, *, consumer_factory: ConsumerFactory | bool | None = False, port: int = 0
) -> AsyncIterator[RunningService]:
    app = create_app(settings, consumer_factory=consumer_factory)
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log_class=RedactingAccessLogger, shutdown_timeout=5.0
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    # A TCPSite's server, once started: an asyncio.Server, or uvloop's (which is not a subclass).
    sockets = getattr(site._server, "sockets", None)
    assert sockets
    bound = sockets[0].getsockname()[1]
    running = RunningService(
        url=f"http://127.0.0.1:{bound}", settings=settings, runtime=app[HUB], runner=runner
    )
    handler = running.runtime.handler
    on_closed = handler.on_closed

    def record_close(connection: HttpConnection) -> None:
        on_closed(connection)
        running.closed.put_nowait(connection.connection_id)

    handler.on_closed = record_close  # type: ignore[method-assign]
    try:
        yield running
    finally:
        await runner.cleanup()
