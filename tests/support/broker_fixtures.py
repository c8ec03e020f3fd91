"""Pytest fixtures for tests that need a real RabbitMQ (registered as a plugin in ``tests/conftest.py``).

- ``broker_url`` (session): the broker every broker test shares — see ``resolve_broker_url``. An
  unreachable broker FAILS the run with a message saying where it looked; it never skips.
- ``broker_settings`` / ``broker_settings_factory``: ``Settings`` whose exchange, queue and instance
  names carry a fresh uuid suffix, so tests cannot see each other's messages; everything those names
  denote is deleted after the test.
- ``broker_admin``: the test's own connection for publishing raw bodies and inspecting queues.
- ``tcp_proxy``: a proxy in front of the broker that can drop every connection or refuse new ones.
- ``private_broker`` (module, marks tests ``slow``): a rabbitmq-server node of our own on spare
  ports, to kill, stop, restart, or close all connections of; always torn down. Its stream
  coordinator is made durable before any test runs (see ``_prime_stream_coordinator``).
  ``private_broker_settings`` are names on that node, with the node (re)started if a test killed it.

Tests using any of these are marked ``broker`` automatically (and ``slow`` for the private node).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aio_pika
import pytest

from config.settings import Settings
from devkit.local_broker import PrivateBroker
from tests.support.broker import (
    BrokerAdmin,
    TcpProxy,
    check_reachable,
    redact,
    resolve_broker_url,
)

_BROKER_FIXTURES = {
    "broker_url",
    "broker_settings",
    "broker_settings_factory",
    "broker_admin",
    "tcp_proxy",
}
_PRIVATE_FIXTURES = {"private_broker", "private_broker_settings", "private_broker_admin"}

SettingsFactory = Callable[..., Settings]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & (_BROKER_FIXTURES | _PRIVATE_FIXTURES):
            item.add_marker(pytest.mark.broker)
        if names & _PRIVATE_FIXTURES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    location = resolve_broker_url()
    try:
        error = asyncio.run(check_reachable(location.url))
        if error is not None:
            pytest.fail(
                f"RabbitMQ is not reachable at {redact(location.url)} (from {location.source}): {error}. "
                "Start a broker there, set RABBITMQ_URL, or make a Docker engine available.",
                pytrace=False,
            )
        yield location.url
    finally:
        location.stop()


def _settings(url: str, **overrides: Any) -> Settings:
    suffix = uuid.uuid4().hex[:12]
    values: dict[str, Any] = {
        "rabbitmq_url": url,
        "instance_id": f"test-{suffix}",
        "position_queue_prefix": "test.position.",
        "stream_name": f"test.{suffix}.events",
        "stream_max_bytes": 50_000_000,
        "stream_segment_bytes": 5_000_000,
        "recommendations_exchange": f"test.{suffix}.recommendations",
        "assignments_exchange": f"test.{suffix}.assignments",
        "dead_letter_exchange": f"test.{suffix}.dead-letter",
        "dead_letter_queue": f"test.{suffix}.dead-letter",
        "consume_grace_seconds": 0.0,
        "queue_expires_ms": 60_000,  # a queue a crashed test leaves behind disappears by itself
        "broker_connect_timeout_seconds": 5.0,
        "shutdown_timeout_seconds": 5.0,
        "hub_shutdown_drain_seconds": 1.0,
        # Settings requires auth configuration unless in dev mode; the consumers do not use it.
        "auth_dev_mode": True,
    }
    values.update(overrides)
    return Settings(**values)


async def _cleanup(created: list[Settings], *, strict: bool) -> None:
    by_url: dict[str, list[Settings]] = {}
    for settings in created:
        by_url.setdefault(settings.amqp_url, []).append(settings)
    for url, group in by_url.items():
        admin = BrokerAdmin(url)
        try:
            await admin.open()
            for settings in group:
                await admin.delete(
                    queues=(
                        settings.stream_name,
                        f"{settings.position_queue_prefix}{settings.instance_id}",
                        settings.dead_letter_queue,
                    ),
                    exchanges=(
                        settings.recommendations_exchange,
                        settings.assignments_exchange,
                        settings.dead_letter_exchange,
                    ),
                )
        except Exception:
            if strict:
                raise
        finally:
            with contextlib.suppress(Exception):
                await admin.close()


@pytest.fixture
async def broker_settings_factory(broker_url: str) -> AsyncIterator[SettingsFactory]:
    """``make(**overrides) -> Settings`` on the shared broker, with unique names, cleaned up after."""
    created: list[Settings] = []

    def make(**overrides: Any) -> Settings:
        settings = _settings(broker_url, **overrides)
        created.append(settings)
        return settings

    yield make
    # Settings pointing elsewhere (e.g. through a proxy) are cleaned up through the broker itself.
    await _cleanup([s.model_copy(update={"rabbitmq_url": broker_url}) for s in created], strict=True)


@pytest.fixture
def broker_settings(broker_settings_factory: SettingsFactory) -> Settings:
    return broker_settings_factory()


@pytest.fixture
async def broker_admin(broker_url: str) -> AsyncIterator[BrokerAdmin]:
    admin = BrokerAdmin(broker_url)
    await admin.open()
    yield admin
    await admin.close()


@pytest.fixture
async def tcp_proxy(broker_url: str) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(broker_url)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    try:
        node = PrivateBroker(tmp_path_factory.mktemp("rabbitmq-node"))
    except FileNotFoundError as error:
        pytest.fail(f"cannot start a private RabbitMQ node: {error}", pytrace=False)
    try:
        node.start()
        _prime_stream_coordinator(node)
        yield node
    finally:
        node.teardown()


def _prime_stream_coordinator(node: PrivateBroker) -> None:
    """Start the node's stream coordinator and make its state durable with a graceful restart.

    RabbitMQ 3.10 starts the stream coordinator (a Raft cluster) when the first stream of a node is
    declared. A node SIGKILLed within about a second of that loses the coordinator's state, and
    every stream of the node then stays down for good ("home node ... of durable queue ... is down
    or inaccessible"). Seen on 3.10.8 in every trial that killed the node less than a second after its
    first stream was declared, and in none with a pause of 1 s or more, or after a graceful restart.
    A kill test must not depend on how long the node had been up.
    """

    async def declare_and_delete() -> None:
        connection = await aio_pika.connect(node.url, timeout=10)
        try:
            channel = await connection.channel()
            name = f"test.prime.{uuid.uuid4().hex[:8]}"
            await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "stream"})
            await channel.queue_delete(name)
        finally:
            await connection.close()

    asyncio.run(declare_and_delete())
    node.stop()
    node.start()


@pytest.fixture
async def private_broker_settings(private_broker: PrivateBroker) -> AsyncIterator[SettingsFactory]:
    """Like ``broker_settings_factory`` but on the private node, which is (re)started first."""
    await asyncio.to_thread(private_broker.start)
    created: list[Settings] = []

    def make(**overrides: Any) -> Settings:
        settings = _settings(private_broker.url, **overrides)
        created.append(settings)
        return settings

    yield make
    if private_broker.running:
        await _cleanup(created, strict=False)


@pytest.fixture
async def private_broker_admin(private_broker: PrivateBroker) -> AsyncIterator[BrokerAdmin]:
    await asyncio.to_thread(private_broker.start)
    admin = BrokerAdmin(private_broker.url)
    await admin.open()
    yield admin
    await admin.close()
