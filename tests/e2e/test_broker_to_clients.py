"""RabbitMQ → service → official JS client, end to end (the README's contracts, as a user sees them).

A real broker, the real consumer inside the real app, and @microsoft/signalr clients on every
transport. "Received nothing" is shown without sleeping: a later event that the client *should*
get is published after the one it must not get; per-queue order means it would have come first.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from consumers.dead_letter import REASON_HEADER
from publisher import job_assigned, recommendation_ready, routing_key_for
from schemas import parse_event
from tests.support.broker import BrokerAdmin, TcpProxy
from tests.support.jsclient import NodeDriver
from tests.support.server import RunningService, running_service
from tests.support.tokens import TokenFactory

pytestmark = [pytest.mark.node, pytest.mark.broker]

LISTEN = ("RecommendationReady", "JobAssigned")
SettingsFactory = Callable[..., Settings]


def recommendation(region: str = "north-america", **fields: Any) -> dict[str, Any]:
    # A timestamp with fraction and offset: clients must get it exactly as published.
    return recommendation_ready(
        region=region, configVersion=7, generatedAt="2026-11-26T10:00:00.250+01:00", **fields
    )


def assignment(contractor_id: str, region: str = "north-america") -> dict[str, Any]:
    return job_assigned(
        region=region,
        contractor_id=contractor_id,
        startUtc="2026-11-27T08:00:00Z",
        endUtc="2026-11-27T12:30:00.5+00:00",
        source="manual",
    )


def hub_and_broker_settings(make: SettingsFactory, tokens: TokenFactory, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "http_host": "127.0.0.1",
        "http_port": 0,
        "auth_dev_mode": False,
        "auth_jwks_url": tokens.jwks_url,
        "auth_issuer": tokens.issuer,
        "auth_audience": tokens.audience,
        "log_format": "console",
    }
    values.update(overrides)
    return make(**values)


async def publish(
    admin: BrokerAdmin, settings: Settings, event: dict[str, Any], *, body: bytes | None = None
) -> str:
    exchange = (
        settings.recommendations_exchange
        if event["type"] == "RecommendationReady"
        else settings.assignments_exchange
    )
    routing_key = routing_key_for(parse_event(json.dumps(event).encode()))
    return await admin.publish(
        exchange, body if body is not None else json.dumps(event).encode(), routing_key=routing_key
    )


@pytest.fixture
async def live(
    broker_settings_factory: SettingsFactory, token_factory: TokenFactory
) -> AsyncIterator[RunningService]:
    settings = hub_and_broker_settings(broker_settings_factory, token_factory)
    async with running_service(settings, consumer_factory=True) as service:
        consumer = service.runtime.consumer
        assert consumer is not None
        await asyncio.wait_for(consumer.wait_caught_up(), 20)
        yield service


async def test_published_events_reach_exactly_the_right_groups(
    live: RunningService, js: NodeDriver, token_factory: TokenFactory, broker_admin: BrokerAdmin
) -> None:
    settings = live.settings
    contractor_a, contractor_b = str(uuid.uuid4()), str(uuid.uuid4())
    north = await js.connect(live.hub_url, token_factory.dispatcher(["north-america"]), listen=LISTEN)
    south = await js.connect(
        live.hub_url,
        token_factory.dispatcher(["south-america"]),
        transport="LongPolling",
        protocol="messagepack",
        listen=LISTEN,
    )
    a = await js.connect(
        live.hub_url, token_factory.contractor(contractor_a), transport="ServerSentEvents", listen=LISTEN
    )
    b = await js.connect(
        live.hub_url, token_factory.contractor(contractor_b), protocol="messagepack", listen=LISTEN
    )
    await north.invoke("JoinDispatchGroup", "north-america")
    await south.invoke("JoinDispatchGroup", "south-america")
    await a.invoke("JoinContractorGroup", contractor_a)
    await b.invoke("JoinContractorGroup", contractor_b)

    ready = recommendation(futureField={"ignored": True})
    assigned = assignment(contractor_a.upper())  # producers may send upper-case UUIDs
    await publish(broker_admin, settings, ready)
    await publish(broker_admin, settings, assigned)

    expected_ready = {k: v for k, v in ready.items() if k != "futureField"}  # unknown fields are dropped
    assert (await north.next_message())["args"] == [expected_ready]
    assert (await north.next_message())["args"] == [assigned]  # as published, case included
    assert (await a.next_message())["args"] == [assigned]

    # South and contractor B got nothing: their own next events arrive first.
    south_event, b_event = recommendation("south-america"), assignment(contractor_b, "south-america")
    await publish(broker_admin, settings, south_event)
    await publish(broker_admin, settings, b_event)
    assert (await south.next_message())["args"] == [south_event]
    assert (await south.next_message())["args"] == [b_event]
    assert (await b.next_message())["args"] == [b_event]
    for client in (north, a):
        assert not [e for e in client.received() if e["event"] == "message"]


async def test_invalid_messages_are_dead_lettered_and_never_reach_clients(
    live: RunningService, js: NodeDriver, token_factory: TokenFactory, broker_admin: BrokerAdmin
) -> None:
    settings = live.settings
    client = await js.connect(live.hub_url, token_factory.dispatcher(), listen=LISTEN)
    await client.invoke("JoinDispatchGroup", "north-america")
    bad = recommendation(jobId="not-a-uuid")
    await publish(broker_admin, settings, recommendation(), body=json.dumps(bad).encode())
    await broker_admin.publish(
        settings.recommendations_exchange, b"{not json", routing_key="recommendation.ready.x"
    )
    good = recommendation()
    await publish(broker_admin, settings, good)
    assert (await client.next_message())["args"] == [good]  # the valid one behind them still flows
    dead = await broker_admin.take(settings.dead_letter_queue, 2)
    reasons = sorted(str(message.headers[REASON_HEADER]) for message in dead)
    assert reasons == ["not_json", "schema"]


async def test_broker_connection_drop_loses_nothing(
    broker_settings_factory: SettingsFactory,
    token_factory: TokenFactory,
    tcp_proxy: TcpProxy,
    broker_admin: BrokerAdmin,
    js: NodeDriver,
) -> None:
    # The service reaches the broker through a proxy the test can cut; the test publishes directly.
    settings = hub_and_broker_settings(
        broker_settings_factory,
        token_factory,
        rabbitmq_url=tcp_proxy.url,
        broker_reconnect_interval_seconds=0.2,
    )
    async with running_service(settings, consumer_factory=True) as service:
        consumer = service.runtime.consumer
        assert consumer is not None
        await asyncio.wait_for(consumer.wait_caught_up(), 20)
        client = await js.connect(service.hub_url, token_factory.dispatcher(), listen=LISTEN)
        await client.invoke("JoinDispatchGroup", "north-america")
        events = [recommendation() for _ in range(6)]
        for event in events[:2]:
            await publish(broker_admin, settings, event)
        for event in events[:2]:
            assert (await client.next_message())["args"] == [event]

        assert tcp_proxy.disconnect_all() >= 1
        for event in events[2:]:  # published while the service is cut off
            await publish(broker_admin, settings, event)
        for event in events[2:]:
            assert (await client.next_message(timeout=30))["args"] == [event]  # in order, once each
        await asyncio.wait_for(consumer.wait_caught_up(), 20)
        marker = recommendation()
        await publish(broker_admin, settings, marker)
        assert (await client.next_message())["args"] == [marker]  # no duplicate came before it


async def test_restart_delivers_the_backlog_after_clients_rejoin(
    broker_settings_factory: SettingsFactory,
    token_factory: TokenFactory,
    broker_admin: BrokerAdmin,
    js: NodeDriver,
) -> None:
    settings = hub_and_broker_settings(broker_settings_factory, token_factory, consume_grace_seconds=2.0)
    first = running_service(settings, consumer_factory=True)
    service = await first.__aenter__()
    port = int(service.url.rsplit(":", 1)[1])
    consumer = service.runtime.consumer
    assert consumer is not None
    await asyncio.wait_for(consumer.wait_caught_up(), 20)
    client = await js.connect(
        service.hub_url,
        token_factory.dispatcher(),
        listen=LISTEN,
        automaticReconnect=[0, 200, 400, 800, 1000, 1000],
    )
    await client.invoke("JoinDispatchGroup", "north-america")
    await first.__aexit__(None, None, None)  # the instance stops (SIGTERM path: Close, allowReconnect)
    await client.next_event("reconnecting")

    backlog = [recommendation() for _ in range(5)]
    for event in backlog:  # published while no instance runs: they wait in the durable queue
        await publish(broker_admin, settings, event)

    async with running_service(settings, consumer_factory=True, port=port) as restarted:
        await client.next_event("reconnected", timeout=30)
        await client.invoke("JoinDispatchGroup", "north-america")  # onreconnected in a real app
        for event in backlog:
            assert (await client.next_message(timeout=30))["args"] == [event]
        assert restarted.runtime.consumer is not None


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def test_metrics_move_with_consumed_delivered_and_dead_lettered_events(
    live: RunningService, js: NodeDriver, token_factory: TokenFactory, broker_admin: BrokerAdmin
) -> None:
    async def scrape() -> str:
        async with aiohttp.ClientSession() as session, session.get(f"{live.url}/metrics") as response:
            assert response.status == 200
            return await response.text()

    before = await scrape()
    client = await js.connect(live.hub_url, token_factory.dispatcher(), protocol="messagepack", listen=LISTEN)
    await client.invoke("JoinDispatchGroup", "north-america")
    await publish(broker_admin, live.settings, recommendation(), body=b'{"type":"Nope"}')
    event = recommendation()
    await publish(broker_admin, live.settings, event)
    assert (await client.next_message())["args"] == [event]
    after = await scrape()

    def delta(name: str, **labels: str) -> float:
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert delta("realtime_events_consumed_total", type="RecommendationReady") == 1
    assert delta("realtime_events_delivered_total", type="RecommendationReady") == 1
    assert delta("realtime_events_dead_lettered_total", reason="unknown_type") == 1
    assert delta("realtime_hub_deliveries_total", protocol="messagepack") == 1
    assert delta("realtime_hub_connections", transport="WebSockets", protocol="messagepack") == 1
    assert delta("realtime_hub_group_memberships", kind="dispatch") == 1
    assert _sample(after, "realtime_broker_connected") == 1
    assert delta("realtime_event_latency_seconds_count", type="RecommendationReady") == 1
