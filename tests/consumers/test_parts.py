"""The consumer's parts that need no broker: dedup window, routes, topology, URL, error triage, metrics."""

from __future__ import annotations

import uuid

import aiormq.exceptions
import orjson
import pytest
from yarl import URL

from broker import BrokerConfigurationError, Topology
from broker.connection import amqp_url, is_fatal_connect_error, redact
from config.settings import QueueType, Settings
from consumers.dedup import DuplicateFilter, message_key
from consumers.routes import groups_for
from publisher import job_assigned, recommendation_ready, routing_key_for
from schemas import parse_event


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_duplicate_filter_forgets_after_the_window() -> None:
    clock = Clock()
    seen = DuplicateFilter(window_seconds=10, max_entries=100, clock=clock)
    seen.remember("a")
    clock.now += 9.9
    assert seen.seen("a")
    clock.now += 0.2
    assert not seen.seen("a")
    assert len(seen) == 0


def test_duplicate_filter_is_bounded_and_evicts_oldest() -> None:
    seen = DuplicateFilter(window_seconds=600, max_entries=3, clock=Clock())
    for key in "abcd":
        seen.remember(key)
    assert len(seen) == 3
    assert not seen.seen("a")
    assert all(seen.seen(key) for key in "bcd")
    seen.remember("b")  # refreshed: now the newest
    seen.remember("e")
    assert seen.seen("b")
    assert not seen.seen("c")


@pytest.mark.parametrize(("window", "entries"), [(0, 100), (600, 0)])
def test_duplicate_filter_can_be_disabled(window: float, entries: int) -> None:
    seen = DuplicateFilter(window_seconds=window, max_entries=entries)
    seen.remember("a")
    assert not seen.enabled
    assert not seen.seen("a")


def test_message_key_prefers_message_id_else_body_hash() -> None:
    assert message_key("m-1", b"x") == message_key("m-1", b"y") == "id:m-1"
    assert message_key(None, b"x") == message_key("", b"x") != message_key(None, b"y")
    assert message_key(None, b"x").startswith("sha256:")


def test_routes_cover_both_events_and_canonicalise_names() -> None:
    contractor = uuid.uuid4()
    ready = parse_event(orjson.dumps(recommendation_ready(region="North-America")))
    assigned = parse_event(orjson.dumps(job_assigned(region="EMEA", contractor_id=str(contractor).upper())))
    assert groups_for(ready) == ("dispatch/north-america",)
    assert groups_for(assigned) == ("dispatch/emea", f"contractor/{contractor}")
    assert routing_key_for(ready) == "recommendation.ready.north-america"
    assert routing_key_for(assigned) == "job.assigned.emea"


def _settings(**overrides: object) -> Settings:
    return Settings(auth_dev_mode=True, **overrides)  # type: ignore[arg-type]


def test_topology_from_settings() -> None:
    topology = Topology.from_settings(
        _settings(
            instance_id="host-1",
            queue_type=QueueType.QUORUM,
            queue_expires_ms=120_000,
            stream_name="events",
            stream_max_age="2h",
            stream_max_bytes=5_000_000,
            stream_segment_bytes=500_000,
        )
    )
    assert topology.stream == "events"
    assert topology.position_queue == "realtime.position.host-1"
    assert topology.event_exchanges == ("recommendations", "assignments")
    # One stream shared by every instance: its arguments are the same everywhere.
    assert topology.stream_arguments() == {
        "x-queue-type": "stream",
        "x-max-age": "2h",
        "x-max-length-bytes": 5_000_000,
        "x-stream-max-segment-size-bytes": 500_000,
    }
    # QUEUE_TYPE applies to the service's own queues: the position queue and the dead letters.
    assert topology.position_queue_arguments() == {
        "x-queue-type": "quorum",
        "x-expires": 120_000,
        "x-max-length": 1,
        "x-overflow": "drop-head",
    }
    assert topology.dead_letter_queue_arguments() == {"x-queue-type": "quorum"}


@pytest.mark.parametrize(
    "overrides",
    [
        {"instance_id": "x" * 200, "position_queue_prefix": "y" * 60},
        {"stream_name": "amq.events"},
        {"stream_name": ""},
        {"recommendations_exchange": "amq.topic"},
        {"dead_letter_queue": ""},
    ],
)
def test_unusable_names_are_configuration_errors(overrides: dict[str, object]) -> None:
    with pytest.raises(BrokerConfigurationError):
        Topology.from_settings(_settings(**overrides))


def test_amqp_url_adds_parameters_but_keeps_the_operators() -> None:
    url = amqp_url(
        "amqps://u:p@broker:5671/vh?heartbeat=30",
        heartbeat_seconds=20,
        connection_name="rt:host-1",
        reconnect_interval_seconds=2,
    )
    assert url.query["heartbeat"] == "30"
    assert url.query["name"] == "rt:host-1"
    assert url.query["reconnect_interval"] == "2.0"
    assert url.path == "/vh"
    assert "p@" not in redact(url)
    assert URL(redact(url)).password == "***"


def test_fatal_connect_errors_are_told_apart_from_transient_ones() -> None:
    assert is_fatal_connect_error(aiormq.exceptions.ProbableAuthenticationError("ACCESS_REFUSED"))
    assert is_fatal_connect_error(
        aiormq.exceptions.InvalidFrameError(
            "Expected one of ['Connection.OpenOk'], got <Connection.Close object at 0x1>"
        )
    )
    assert not is_fatal_connect_error(aiormq.exceptions.AMQPConnectionError("connection refused"))
    assert not is_fatal_connect_error(ConnectionResetError())
    assert not is_fatal_connect_error(TimeoutError())


def test_metrics_are_prefixed_and_preinitialised() -> None:
    from prometheus_client import REGISTRY

    from consumers import metrics

    names = [
        collector._name
        for collector in (
            metrics.EVENTS_CONSUMED,
            metrics.EVENTS_DELIVERED,
            metrics.EVENTS_DEAD_LETTERED,
            metrics.EVENTS_DUPLICATE,
            metrics.EVENT_LATENCY,
            metrics.SEND_FAILURES,
            metrics.DEAD_LETTER_FAILURES,
            metrics.LOG_OFFSET,
            metrics.LOG_RESETS,
            metrics.BROKER_CONNECTED,
            metrics.CONSUMER_ACTIVE,
            metrics.CONSUMER_RESTARTS,
        )
    ]
    assert all(name.startswith("realtime_") for name in names)
    for reason in ("not_json", "schema", "unknown_type", "too_large", "content_type", "send_failed"):
        assert (
            REGISTRY.get_sample_value("realtime_events_dead_lettered_total", {"reason": reason}) is not None
        )
    for event_type in ("RecommendationReady", "JobAssigned", "invalid"):
        assert REGISTRY.get_sample_value("realtime_events_consumed_total", {"type": event_type}) is not None
    for reason in ("gap", "recreated"):
        assert REGISTRY.get_sample_value("realtime_log_resets_total", {"reason": reason}) is not None
    for cause in ("cancelled", "reconnected", "channel_closed", "watchdog", "recreated"):
        assert REGISTRY.get_sample_value("realtime_consumer_restarts_total", {"cause": cause}) is not None
    assert REGISTRY.get_sample_value("realtime_dead_letter_failures_total") is not None
