"""A half-open broker link — the peer goes silent without closing — is noticed within 2 × the heartbeat.

The TCP proxy swallows every byte both ways and keeps the sockets open (``TcpProxy.blackhole``), as a
proxy or NAT that lost its state would: no close, no reset, only silence. The consumer must report
itself not connected (what ``/readyz`` reads) within two heartbeat intervals (AMQP 0-9-1 §4.2.7),
reconnect once the path forwards again, and deliver what was published meanwhile, once each.
aiormq alone closes such a link after (heartbeat + 1) × 3 seconds.
"""

from __future__ import annotations

import asyncio

import aiormq
import orjson
import pytest
from yarl import URL

from broker.heartbeat import SilenceWatch, last_frame_at, silence_bound
from config.settings import Settings
from publisher import recommendation_ready
from tests.consumers.conftest import LogEvents, RecordingLog, eventually, metric, running
from tests.support.broker import BrokerAdmin, TcpProxy
from tests.support.broker_fixtures import SettingsFactory

HEARTBEAT = 2  # seconds; aiormq would need (2 + 1) × 3 = 9 s
MARGIN = 1.5  # seconds of scheduling slack on a busy machine, well short of aiormq's 9 s


# --- the verdict, without a broker ------------------------------------------------------------


def test_a_heartbeat_of_zero_disables_the_watch() -> None:
    assert silence_bound(0) is None
    watch = SilenceWatch(heartbeat_seconds=0, last_frame=100.0)
    assert not watch.active
    assert watch.remaining(now=10_000.0) is None


def test_the_link_is_dead_two_heartbeats_after_the_last_frame() -> None:
    watch = SilenceWatch(heartbeat_seconds=5, last_frame=100.0)
    assert watch.remaining(now=101.0) == pytest.approx(9.0)
    assert watch.remaining(now=110.0) == pytest.approx(0.0)
    assert watch.silent_for(now=112.5) == pytest.approx(12.5)


def test_a_link_that_keeps_receiving_never_trips() -> None:
    # Frames every 0.1 s for a minute, judged after each one: always the full bound ahead.
    for tick in range(600):
        now = 100.0 + tick * 0.1
        remaining = SilenceWatch(heartbeat_seconds=1, last_frame=now).remaining(now + 0.05)
        assert remaining is not None
        assert remaining > 1.9


async def test_aiormq_still_records_the_last_frame_time() -> None:
    """The one piece of aiormq's insides the watch reads; an aiormq without it fails here."""
    connection = aiormq.Connection(URL("amqp://guest:guest@127.0.0.1:1/?heartbeat=5"))
    at = last_frame_at(connection)
    assert at is not None
    assert at <= asyncio.get_running_loop().time()


# --- a real link through a proxy that goes silent ---------------------------------------------


async def _publish_paced(
    admin: BrokerAdmin, settings: Settings, bodies: list[dict[str, object]], gap: float
) -> None:
    for body in bodies:
        await admin.publish(settings.recommendations_exchange, orjson.dumps(body))
        await asyncio.sleep(gap)  # a steady trickle that keeps frames flowing on the link


@pytest.mark.broker
async def test_a_silent_link_is_noticed_within_two_heartbeats_and_nothing_is_lost(
    broker_settings_factory: SettingsFactory,
    tcp_proxy: TcpProxy,
    sender: RecordingLog,
    broker_admin: BrokerAdmin,
    logged: LogEvents,
) -> None:
    settings = broker_settings_factory(rabbitmq_url=tcp_proxy.url)
    before = [recommendation_ready(region="before", configVersion=i) for i in range(50)]
    during = [recommendation_ready(region="during", configVersion=i) for i in range(20)]
    after = [recommendation_ready(region="after", configVersion=i) for i in range(10)]
    timeouts_before = metric("realtime_broker_link_losses_total", reason="heartbeat_timeout")
    restarts_before = metric("realtime_consumer_restarts_total", cause="heartbeat_timeout")
    loop = asyncio.get_running_loop()
    async with running(
        settings, sender, heartbeat_seconds=HEARTBEAT, operation_timeout_seconds=3.0
    ) as consumer:
        # A busy link for 2.5 heartbeat intervals: frames flow, nothing trips.
        await _publish_paced(broker_admin, settings, before, gap=2.5 * HEARTBEAT / len(before))
        await sender.wait_for_count(len(before), timeout=15)
        assert metric("realtime_broker_link_losses_total", reason="heartbeat_timeout") == timeouts_before
        assert consumer.is_connected

        tcp_proxy.blackhole()
        silenced = loop.time()
        await eventually(lambda: not consumer.is_connected, timeout=30, what="silent link noticed")
        noticed_after = loop.time() - silenced
        assert noticed_after <= 2 * HEARTBEAT + MARGIN, (
            f"a silent link was noticed after {noticed_after:.1f} s; the bound is 2 × {HEARTBEAT} s"
        )
        assert not consumer.is_consuming
        assert metric("realtime_broker_connected") == 0
        assert metric("realtime_broker_link_losses_total", reason="heartbeat_timeout") == timeouts_before + 1
        [event] = logged.named("broker.heartbeat_timeout")
        assert event["heartbeatSeconds"] == HEARTBEAT
        assert HEARTBEAT <= event["silentForSeconds"] <= 2 * HEARTBEAT + MARGIN

        # Published while the path is dead (straight to the broker), then the path comes back.
        await _publish_paced(broker_admin, settings, during, gap=0)
        tcp_proxy.blackhole(False)
        await eventually(
            lambda: consumer.is_connected and consumer.is_consuming, timeout=30, what="recovered"
        )
        await _publish_paced(broker_admin, settings, after, gap=0)
        await sender.wait_for_count(len(before) + len(during) + len(after), timeout=30)
    # None lost, none twice, in order; the hub kept its history.
    assert sender.job_ids() == [body["jobId"] for body in before + during + after]
    assert sender.resets == []
    assert len(logged.named("broker.heartbeat_timeout")) == 1
    assert metric("realtime_consumer_restarts_total", cause="heartbeat_timeout") == restarts_before + 1
