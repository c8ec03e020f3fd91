"""No event silently lost: two real instances behind a fail-over proxy, the official JS client with the
console's Continuity pattern (``?positions=true``, Resume on start and after every reconnect), and
instance A going away mid-stream — killed, vanished, or restarted — while events flow at 200/s.

Each client must receive every event of its groups exactly once, in publish order, whichever
instance it ends up on. Publish order is log order here: one publisher, one channel, confirms.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from publisher import EventPublisher, recommendation_ready
from schemas.log import Position
from tests.support.instances import FailoverProxy, ServiceProcess, free_port
from tests.support.jsclient import JsConnection, NodeDriver
from tests.support.tokens import TokenFactory

pytestmark = [pytest.mark.node, pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(240)]

NA, EU = "dispatch/north-america", "dispatch/europe"
EVENTS = 1000
RATE = 200.0  # events per second
SettingsFactory = Callable[..., Settings]


@dataclass
class Client:
    """One JS client with the Continuity pattern, and everything it reported."""

    connection: JsConnection
    groups: tuple[str, ...]
    label: str
    events: list[tuple[str, str]] = field(default_factory=list)  # (jobId, position)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    story: list[str] = field(default_factory=list)  # what the client reported, compressed

    def pump(self) -> None:
        for reported in self.connection.received():
            kind = reported["event"]
            if kind == "message":
                event, position = reported["args"]
                self.events.append((event["jobId"], position))
                offset = position.split(":")[0]
                if self.story and self.story[-1].startswith("msg "):
                    self.story[-1] = f"{self.story[-1].split('..')[0]}..{offset}"
                else:
                    self.story.append(f"msg {offset}..{offset}")
            else:
                if kind == "resumed":
                    self.resumes.append(reported["result"])
                self.story.append(f"{kind} {reported.get('result') or reported.get('error') or ''}")


@dataclass
class Stack:
    a: ServiceProcess
    b: ServiceProcess
    proxy: FailoverProxy
    settings: dict[str, Any]
    publisher: EventPublisher
    log_dir: Path


def _settings(base: Settings, tokens: TokenFactory, **overrides: Any) -> dict[str, Any]:
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
        "auth_jwks_url": tokens.jwks_url,
        "auth_issuer": tokens.issuer,
        "auth_audience": tokens.audience,
        "hub_keep_alive_interval": 1,  # clients here time the server out after 3 s of silence
        "consume_grace_seconds": 1,
        "log_format": "console",
        "log_level": "INFO",
        **overrides,
    }


@pytest.fixture
async def stack(
    broker_settings_factory: SettingsFactory, token_factory: TokenFactory, tmp_path: Path
) -> AsyncIterator[Stack]:
    base = broker_settings_factory()
    suffix = uuid.uuid4().hex[:8]
    # Both instance ids through the factory, so that both position queues are cleaned up too.
    ids = [
        broker_settings_factory(**_shared(base), instance_id=f"{name}-{suffix}").instance_id for name in "ab"
    ]
    settings = _settings(base, token_factory)
    a = ServiceProcess("a", {**settings, "instance_id": ids[0]}, port=free_port(), log_dir=tmp_path)
    b = ServiceProcess("b", {**settings, "instance_id": ids[1]}, port=free_port(), log_dir=tmp_path)
    proxy = FailoverProxy([a.port, b.port])
    await proxy.start()
    publisher = EventPublisher.from_settings(base)
    try:
        await asyncio.gather(a.start(), b.start())
        await asyncio.gather(a.wait_ready(), b.wait_ready())
        await publisher.connect()
        yield Stack(a=a, b=b, proxy=proxy, settings=settings, publisher=publisher, log_dir=tmp_path)
    finally:
        await publisher.close()
        await asyncio.gather(a.stop(), b.stop())
        await proxy.close()


def _shared(base: Settings) -> dict[str, Any]:
    return {
        name: getattr(base, name)
        for name in (
            "recommendations_exchange",
            "assignments_exchange",
            "dead_letter_exchange",
            "dead_letter_queue",
            "stream_name",
        )
    }


CLIENTS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("WebSockets", "json", "ws-json", (NA, EU)),
    ("WebSockets", "messagepack", "ws-msgpack", (NA,)),
    ("ServerSentEvents", "json", "sse", (EU,)),
    ("LongPolling", "json", "lp", (NA,)),
)


async def _connect(
    js: NodeDriver, stack: Stack, token: str, specs: Sequence[tuple[str, str, str, tuple[str, ...]]]
) -> list[Client]:
    clients = []
    for transport, protocol, label, groups in specs:
        connection = await js.connect(
            f"{stack.proxy.url}/hub/recommendations?positions=true",
            token,
            transport=transport,
            protocol=protocol,
            listen=("RecommendationReady",),
            continuity={"groups": list(groups)},
            automaticReconnect=[0, 250, 500, 1000, 1000, 1000, 2000, 2000, 2000, 5000, 5000],
            serverTimeoutMs=3000,
            keepAliveMs=1000,
        )
        clients.append(Client(connection, groups, label))
    return clients


async def _publish(stack: Stack, count: int, *, on: dict[int, Callable[[], object]]) -> list[tuple[str, str]]:
    """Publish ``count`` events at RATE per second (alternating regions); run ``on[i]`` after event i."""
    published: list[tuple[str, str]] = []
    started = time.monotonic()
    for index in range(count):
        region = "north-america" if index % 2 == 0 else "europe"
        event = recommendation_ready(region=region)
        await stack.publisher.publish(event)  # confirmed: it is in the log
        published.append((event["jobId"], f"dispatch/{region}"))
        action = on.get(index)
        if action is not None:
            result = action()
            if asyncio.iscoroutine(result):
                await result
        delay = started + (index + 1) / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the load generator, not waiting for an outcome
    return published


async def _until_complete(
    clients: list[Client], published: list[tuple[str, str]], timeout: float = 60
) -> None:
    expected = {client.label: _expected(client, published) for client in clients}
    deadline = time.monotonic() + timeout
    while True:
        for client in clients:
            client.pump()
        if all(len(client.events) >= len(expected[client.label]) for client in clients):
            return
        if time.monotonic() > deadline:
            got = {client.label: (len(client.events), len(expected[client.label])) for client in clients}
            pytest.fail(f"clients did not receive everything within {timeout} s: {got}")
        await asyncio.sleep(0.05)  # the Node driver reports asynchronously; there is no single event


def _expected(client: Client, published: list[tuple[str, str]]) -> list[str]:
    return [job_id for job_id, group in published if group in client.groups]


def _assert_exactly_once_in_order(clients: list[Client], published: list[tuple[str, str]]) -> None:
    for client in clients:
        received = [job_id for job_id, _ in client.events]
        expected = _expected(client, published)
        if received != expected:
            index = next(
                (i for i, (a, b) in enumerate(zip(received, expected, strict=False)) if a != b), None
            )
            missing = [job_id for job_id in expected if job_id not in set(received)]
            repeated = len(received) - len(set(received))
            first_missing = expected.index(missing[0]) if missing else None
            around = client.events[max(0, (index or 0) - 3) : (index or 0) + 3]
            pytest.fail(
                f"{client.label}: {len(received)} received, {len(expected)} expected, first difference at "
                f"{index}, {len(missing)} missing (first at {first_missing}), {repeated} repeated; "
                f"entries around it: {around}; story: {client.story}"
            )
        offsets = [Position.parse(position).offset for _, position in client.events]
        assert offsets == sorted(set(offsets)), f"{client.label}: positions must strictly increase"


async def _drain_after(clients: list[Client], js: NodeDriver, stack: Stack) -> None:
    """After completion nothing more may arrive: publish a marker event each client must see next."""
    marker = recommendation_ready(region="north-america")
    marker_eu = recommendation_ready(region="europe")
    await stack.publisher.publish(marker)
    await stack.publisher.publish(marker_eu)
    for client in clients:
        wanted = marker["jobId"] if NA in client.groups else marker_eu["jobId"]
        before = len(client.events)
        deadline = time.monotonic() + 20
        while not any(job_id == wanted for job_id, _ in client.events[before:]):
            client.pump()
            assert time.monotonic() < deadline, f"{client.label}: marker not received"
            await asyncio.sleep(0.05)
        assert client.events[before][0] == wanted, f"{client.label}: something arrived before the marker"


async def test_instance_killed_mid_stream_every_client_gets_every_event_once_in_order(
    stack: Stack, js: NodeDriver, token_factory: TokenFactory
) -> None:
    token = token_factory.dispatcher(regions=("north-america", "europe"))
    clients = await _connect(js, stack, token, CLIENTS)
    assert stack.proxy.connections[stack.b.port] == 0  # everyone is on A

    published = await _publish(stack, EVENTS, on={300: stack.a.kill})
    await _until_complete(clients, published)
    _assert_exactly_once_in_order(clients, published)
    for client in clients:
        assert client.resumes[0]["reason"] == "fresh"  # the first start
        assert client.resumes[-1]["recovered"] is True, client.resumes  # the resume on B …
        assert client.resumes[-1]["replayed"] > 0, client.resumes  # … replayed what A never sent
    assert stack.proxy.connections[stack.b.port] >= len(clients)
    await _drain_after(clients, js, stack)


async def test_instance_vanishing_without_a_reset_is_survived_through_the_server_timeout(
    stack: Stack, js: NodeDriver, token_factory: TokenFactory
) -> None:
    # Long Polling has no server timeout in the JS client (polls are its keep-alive); its request
    # timeout is 100 s, so it is left out here: the README says so.
    token = token_factory.dispatcher(regions=("north-america", "europe"))
    clients = await _connect(js, stack, token, [spec for spec in CLIENTS if spec[0] != "LongPolling"])

    published = await _publish(stack, EVENTS, on={300: lambda: stack.proxy.vanish(stack.a.port)})
    await _until_complete(clients, published)
    _assert_exactly_once_in_order(clients, published)
    for client in clients:
        assert client.resumes[-1]["recovered"] is True, client.resumes
    await _drain_after(clients, js, stack)


async def test_rolling_restart_of_both_instances_loses_nothing(
    stack: Stack, js: NodeDriver, token_factory: TokenFactory
) -> None:
    token = token_factory.dispatcher(regions=("north-america", "europe"))
    clients = await _connect(js, stack, token, CLIENTS)

    async def restart_a() -> None:
        stack.a.terminate()  # a deploy: SIGTERM, final checkpoint, Close(allowReconnect) → to B
        assert await stack.a.wait() == 0
        await stack.a.start()  # the new version of A, same INSTANCE_ID, same port

    async def restart_b() -> None:
        await stack.a.wait_ready()
        stack.b.terminate()  # then B: clients go back to the restarted A
        assert await stack.b.wait() == 0

    published = await _publish(stack, EVENTS, on={200: restart_a, 600: restart_b})
    await _until_complete(clients, published)
    _assert_exactly_once_in_order(clients, published)
    for client in clients:
        assert len(client.resumes) >= 3, client.resumes  # start, on B, back on A
        assert all(result["recovered"] for result in client.resumes[1:]), client.resumes
    await _drain_after(clients, js, stack)
