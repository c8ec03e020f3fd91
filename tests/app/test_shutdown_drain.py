"""SIGTERM while events flow: every client gets its Close, even a long-polling one between two polls.

The real service process and a real RabbitMQ (events published at a steady rate). A long-polling
client spends part of its life between two polls; on SIGTERM its Close waits in its buffer, and the
listener must still accept its next poll to hand it over (``HUB_SHUTDOWN_DRAIN_SECONDS``). Before,
``web.run_app`` closed the listener before the shutdown queued the Close: "connection refused".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from config.settings import Settings
from publisher import EventPublisher, recommendation_ready
from service import shutdown
from tests.support.instances import ServiceProcess, free_port
from tests.support.jsclient import NodeDriver
from tests.support.server import hub_settings, running_service
from tests.support.tokens import TokenFactory
from tests.support.wire import RS, RawLongPollingClient, negotiate, parse_records

pytestmark = [pytest.mark.timeout(120)]

SettingsFactory = Callable[..., Settings]
CLOSE = {"type": 7, "allowReconnect": True}


def _environment(base: Settings, tokens: TokenFactory, **overrides: Any) -> dict[str, Any]:
    return {
        "rabbitmq_url": base.amqp_url,
        "recommendations_exchange": base.recommendations_exchange,
        "assignments_exchange": base.assignments_exchange,
        "dead_letter_exchange": base.dead_letter_exchange,
        "dead_letter_queue": base.dead_letter_queue,
        "stream_name": base.stream_name,
        "stream_max_bytes": base.stream_max_bytes,
        "stream_segment_bytes": base.stream_segment_bytes,
        "position_queue_prefix": base.position_queue_prefix,
        "queue_expires_ms": base.queue_expires_ms,
        "instance_id": base.instance_id,
        "auth_jwks_url": tokens.jwks_url,
        "auth_issuer": tokens.issuer,
        "auth_audience": tokens.audience,
        "consume_grace_seconds": 0,
        "log_format": "json",
        "log_level": "INFO",
        **overrides,
    }


@contextlib.asynccontextmanager
async def _service_with_events(
    base: Settings, tokens: TokenFactory, log_dir: Path, **overrides: Any
) -> AsyncIterator[tuple[ServiceProcess, asyncio.Event]]:
    """The service, ready, with RecommendationReady events for north-america published every 20 ms
    until the test ends (``published`` is set by each publish)."""
    process = ServiceProcess(
        f"svc-{uuid.uuid4().hex[:6]}",
        _environment(base, tokens, **overrides),
        port=free_port(),
        log_dir=log_dir,
    )
    publisher = EventPublisher.from_settings(base)
    published = asyncio.Event()

    async def publish_steadily() -> None:
        while True:
            await publisher.publish(recommendation_ready(region="north-america"))
            published.set()
            await asyncio.sleep(0.02)  # the steady rate itself, not a wait for anything

    await process.start()
    try:
        await process.wait_ready()
        await publisher.connect()
        task = asyncio.create_task(publish_steadily())
        try:
            yield process, published
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await publisher.close()
        await process.stop()


async def _logged(process: ServiceProcess, event: str, *, timeout: float = 15.0) -> None:
    """Until the process has written ``event`` (its log is a file: there is nothing to await)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while f'"{event}"' not in process.log_text():
        assert loop.time() < deadline, f"{event} not logged: {process.log_path}"
        assert process.running or f'"{event}"' in process.log_text(), f"exited: {process.log_path}"
        await asyncio.sleep(0.01)


async def _between_polls(client: RawLongPollingClient) -> None:
    """Poll until a poll returns an event: the client is then between two polls."""
    while True:
        status, body = await client.poll()
        assert status == 200
        if any(record.get("type") == 1 for record in parse_records(body)):
            return


async def test_a_long_polling_client_between_polls_gets_its_close_on_sigterm(
    broker_settings_factory: SettingsFactory, token_factory: TokenFactory, tmp_path: Path
) -> None:
    base = broker_settings_factory()
    async with (
        _service_with_events(base, token_factory, tmp_path) as (process, published),
        aiohttp.ClientSession() as session,
    ):
        hub = f"{process.url}/hub/recommendations"
        client = await RawLongPollingClient.connect(session, hub, token_factory.dispatcher())
        await published.wait()
        await _between_polls(client)

        process.terminate()
        await _logged(process, "shutdown.closing_connections")  # its Close is queued; it has not polled

        # Draining: the instance refuses what is new and says so …
        async with session.get(f"{process.url}/readyz") as response:
            assert response.status == 503
        async with session.post(
            f"{hub}/negotiate",
            params={"negotiateVersion": "1"},
            headers={"Authorization": f"Bearer {token_factory.dispatcher()}"},
        ) as response:
            assert response.status == 503
            assert "shutting down" in await response.text()
        # … and the client's next poll is answered with what was queued, the Close last.
        status, body = await client.poll()
        assert status == 200
        records = parse_records(body)
        assert records[-1] == CLOSE, records
        assert all(record.get("type") == 1 for record in records[:-1]), records

        assert await process.wait(20) == 0
    log = process.log_text()
    assert '"service.stopped"' in log
    assert '"shutdown.unfinished"' not in log


async def test_a_long_polling_client_that_never_polls_again_is_counted_and_does_not_hold_the_exit(
    broker_settings_factory: SettingsFactory, token_factory: TokenFactory, tmp_path: Path
) -> None:
    base = broker_settings_factory()
    async with (
        _service_with_events(base, token_factory, tmp_path, hub_shutdown_drain_seconds=1) as (
            process,
            published,
        ),
        aiohttp.ClientSession() as session,
    ):
        hub = f"{process.url}/hub/recommendations"
        client = await RawLongPollingClient.connect(session, hub, token_factory.dispatcher())
        await published.wait()
        await _between_polls(client)
        process.terminate()
        assert await process.wait(20) == 0
    log = process.log_text()
    [unfinished] = [line for line in log.splitlines() if '"shutdown.unfinished"' in line]
    assert client.negotiated["connectionId"] in unfinished


@pytest.mark.node
async def test_the_js_client_over_long_polling_reconnects_after_sigterm(
    broker_settings_factory: SettingsFactory, token_factory: TokenFactory, tmp_path: Path, js: NodeDriver
) -> None:
    """The official client between polls: told to reconnect, it does (onreconnecting), not onclose
    with a transport error."""
    base = broker_settings_factory()
    async with _service_with_events(base, token_factory, tmp_path) as (process, published):
        hub = f"{process.url}/hub/recommendations"
        connection = await js.connect(
            hub, token_factory.dispatcher(), transport="LongPolling", automaticReconnect=True
        )
        await connection.invoke("JoinDispatchGroup", "north-america")
        await published.wait()
        await connection.next_message("RecommendationReady")
        process.terminate()
        event = await connection.next_event("reconnecting")
        assert event["error"] is None, event  # a Close from the server, not a failed poll
        assert await process.wait(20) == 0


async def test_the_drain_counts_the_close_nobody_collected_and_refuses_new_starts(
    token_factory: TokenFactory,
) -> None:
    """In-process: the drain's outcome in /metrics, and a connection negotiated before SIGTERM but
    started after it is a new connection (503)."""
    async with running_service(hub_settings(token_factory)) as service, aiohttp.ClientSession() as session:
        before = REGISTRY.get_sample_value(
            "realtime_hub_shutdown_unfinished_total", {"transport": "LongPolling"}
        )
        token = token_factory.dispatcher()
        collected = await RawLongPollingClient.connect(session, service.hub_url, token)
        forgotten = await RawLongPollingClient.connect(session, service.hub_url, token)
        late = RawLongPollingClient(
            session, service.hub_url, token, await negotiate(session, service.hub_url, token)
        )
        await shutdown.begin(service.runtime)
        draining = asyncio.create_task(shutdown.drain(service.runtime, 1.0))
        assert await collected.poll() == (200, json.dumps(CLOSE, separators=(",", ":")).encode() + RS)
        assert (await late.poll())[0] == 503
        assert await draining == 1
        after = REGISTRY.get_sample_value(
            "realtime_hub_shutdown_unfinished_total", {"transport": "LongPolling"}
        )
        assert (after or 0) - (before or 0) == 1
        [unfinished] = service.runtime.manager.undelivered()
        assert unfinished.connection_id == forgotten.negotiated["connectionId"]
