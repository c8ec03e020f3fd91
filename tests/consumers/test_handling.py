"""``consumers.handling.classify``: one log entry → exactly one of deliver, dead-letter, duplicate, marker.

Pure: no broker, no consumer. The property test feeds it arbitrary bodies, headers and properties
and checks the outcome against what the entry is, not only that nothing raised.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.dedup import DuplicateFilter, message_key
from consumers.handling import (
    MARKER_HEADER,
    OFFSET_HEADER,
    DeadLetter,
    Deliver,
    Delivery,
    Duplicate,
    Marker,
    classify,
)
from consumers.routes import groups_for
from publisher import job_assigned, recommendation_ready
from schemas import EventValidationError, Reason, check_content_headers, parse_event
from schemas.log import LogRecord, Position, entry_check

MAX_BYTES = 2048
OUTCOMES = (Deliver, DeadLetter, Duplicate, Marker)


def _filter(*keys: str) -> DuplicateFilter:
    duplicates = DuplicateFilter(window_seconds=600, max_entries=1000)
    for key in keys:
        duplicates.remember(key)
    return duplicates


def _delivery(body: dict[str, Any] | bytes, **fields: Any) -> Delivery:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    fields.setdefault("exchange", "recommendations")
    fields.setdefault("routing_key", "recommendation.ready.emea")
    fields.setdefault("offset", 42)
    fields.setdefault("content_type", "application/json")
    return Delivery(body=raw, **fields)


def test_a_valid_recommendation_is_delivered_to_its_region_with_its_record() -> None:
    body = recommendation_ready(region="EMEA")
    sent_at = datetime(2025, 5, 1, 10, 0, 0, tzinfo=UTC)
    delivery = _delivery(body, message_id="m-1", timestamp=sent_at, offset=7)
    outcome = classify(delivery, duplicates=_filter(), max_event_bytes=MAX_BYTES)
    assert isinstance(outcome, Deliver)
    assert outcome.groups == ("dispatch/emea",)
    assert outcome.key == "id:m-1"
    assert outcome.published_at == sent_at.timestamp()
    record = outcome.record(delivery)
    check = entry_check(
        delivery.body, message_id="m-1", exchange="recommendations", routing_key="recommendation.ready.emea"
    )
    assert record == LogRecord(
        offset=7,
        check=check,
        target="RecommendationReady",
        groups=("dispatch/emea",),
        payload=body,
        published_at=sent_at.timestamp(),
    )
    assert str(record.position) == f"7:{check}"


def test_a_job_assignment_goes_to_region_and_contractor() -> None:
    contractor = uuid.uuid4()
    body = job_assigned(region="latam", contractor_id=str(contractor).upper())
    outcome = classify(_delivery(body), duplicates=_filter(), max_event_bytes=MAX_BYTES)
    assert isinstance(outcome, Deliver)
    assert outcome.groups == ("dispatch/latam", f"contractor/{contractor}")
    assert outcome.key == message_key(None, orjson.dumps(body))
    assert outcome.published_at is None  # no AMQP timestamp, and JobAssigned has no generatedAt


def test_published_at_falls_back_to_generated_at_and_reads_naive_timestamps_as_utc() -> None:
    generated = "2025-03-01T08:15:00.5+05:30"
    body = recommendation_ready(region="apac", generatedAt=generated)
    outcome = classify(_delivery(body), duplicates=_filter(), max_event_bytes=MAX_BYTES)
    assert isinstance(outcome, Deliver)
    assert outcome.published_at == datetime.fromisoformat(generated).timestamp()
    naive = datetime(2025, 5, 1, 10, 0, 0)  # what pamqp decodes an AMQP timestamp to
    outcome = classify(_delivery(body, timestamp=naive), duplicates=_filter(), max_event_bytes=MAX_BYTES)
    assert isinstance(outcome, Deliver)
    assert outcome.published_at == naive.replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"", "application/json", Reason.EMPTY),
        (b"{nope", "application/json", Reason.NOT_JSON),
        (b"[1]", None, Reason.NOT_OBJECT),
        (orjson.dumps({"type": "JobCancelled"}), None, Reason.UNKNOWN_TYPE),
        (orjson.dumps({**recommendation_ready(region="x"), "jobId": "no"}), None, Reason.SCHEMA),
        (orjson.dumps({**recommendation_ready(region="x"), "pad": "x" * MAX_BYTES}), None, Reason.TOO_LARGE),
        (orjson.dumps(recommendation_ready(region="x")), "text/plain", Reason.CONTENT_TYPE),
    ],
    ids=lambda value: value.value if isinstance(value, Reason) else None,
)
def test_invalid_entries_are_dead_lettered_with_their_reason(
    body: bytes, content_type: str | None, reason: Reason
) -> None:
    delivery = _delivery(body, content_type=content_type, message_id="bad-1")
    outcome = classify(delivery, duplicates=_filter(), max_event_bytes=MAX_BYTES)
    assert isinstance(outcome, DeadLetter)
    assert (outcome.reason, outcome.key) == (reason.value, "id:bad-1")
    assert outcome.detail


def test_a_handled_message_id_is_a_duplicate_even_with_another_body() -> None:
    first, second = recommendation_ready(region="emea"), recommendation_ready(region="emea")
    delivery = _delivery(second, message_id="m-1")
    assert classify(delivery, duplicates=_filter("id:m-1"), max_event_bytes=MAX_BYTES) == Duplicate("id:m-1")
    # Without a message id the body is the key: the same body again is a duplicate, another is not.
    key = message_key(None, orjson.dumps(first))
    duplicates = _filter(key)
    assert classify(_delivery(first), duplicates=duplicates, max_event_bytes=MAX_BYTES) == Duplicate(key)
    assert isinstance(classify(_delivery(second), duplicates=duplicates, max_event_bytes=MAX_BYTES), Deliver)


def test_an_invalid_body_already_handled_is_a_duplicate_not_a_second_dead_letter() -> None:
    delivery = _delivery(b"{nope", message_id="bad-1")
    assert classify(delivery, duplicates=_filter("id:bad-1"), max_event_bytes=MAX_BYTES) == Duplicate(
        "id:bad-1"
    )


def test_a_marker_is_a_marker_whatever_the_body_and_even_when_its_id_was_seen() -> None:
    headers = {MARKER_HEADER: "host-1:abc", OFFSET_HEADER: 3}
    body = recommendation_ready(region="emea")
    delivery = _delivery(body, headers=headers, message_id="m-1")
    assert classify(delivery, duplicates=_filter("id:m-1"), max_event_bytes=MAX_BYTES) == Marker("host-1:abc")
    # Only a string header is a marker; anything else under that name is an ordinary entry.
    not_marker = _delivery(body, headers={MARKER_HEADER: 5})
    assert isinstance(classify(not_marker, duplicates=_filter(), max_event_bytes=MAX_BYTES), Deliver)


def test_classify_remembers_nothing() -> None:
    duplicates = _filter()
    delivery = _delivery(recommendation_ready(region="emea"), message_id="m-1")
    first = classify(delivery, duplicates=duplicates, max_event_bytes=MAX_BYTES)
    second = classify(delivery, duplicates=duplicates, max_event_bytes=MAX_BYTES)
    assert isinstance(first, Deliver)
    assert first == second
    assert len(duplicates) == 0


# --- property: any entry → exactly one outcome, and the right one ------------------------------

_slugs = st.from_regex(r"[A-Za-z0-9]{1,8}(-[A-Za-z0-9]{1,8}){0,2}", fullmatch=True)
_uuids = st.uuids().map(str) | st.uuids().map(lambda value: str(value).upper())
_moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
) | st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))


def _iso(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone(timedelta(hours=2)))
    return aware.isoformat()


@st.composite
def _valid_events(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        return recommendation_ready(
            region=draw(_slugs),
            jobId=draw(_uuids),
            requestId=draw(_uuids),
            configVersion=draw(st.integers(0, 2**53 - 1)),
            generatedAt=_iso(draw(_moments)),
        )
    start = draw(_moments)
    return job_assigned(
        region=draw(_slugs),
        contractor_id=draw(_uuids),
        startUtc=_iso(start),
        endUtc=_iso(start + timedelta(minutes=draw(st.integers(1, 10_000)))),
        source=draw(st.sampled_from(["auto", "manual"])),
    )


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["valid", "broken", "json", "bytes"]))
    if kind == "valid":
        return orjson.dumps(draw(_valid_events()))
    if kind == "broken":  # a valid event with one field replaced or removed
        body = draw(_valid_events())
        field = draw(st.sampled_from(sorted(body)))
        if draw(st.booleans()):
            del body[field]
        else:
            body[field] = draw(_json_values)
        return orjson.dumps(body)
    if kind == "json":
        return orjson.dumps(draw(_json_values))
    return draw(st.binary(max_size=3000))


_header_values = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=20)


@st.composite
def _deliveries(draw: st.DrawFn) -> Delivery:
    headers = draw(st.dictionaries(st.text(max_size=12), _header_values, max_size=4))
    if draw(st.integers(0, 4)) == 0:
        headers[MARKER_HEADER] = draw(st.text(max_size=30) | _header_values)
    return Delivery(
        offset=draw(st.integers(0, 2**63 - 1)),
        body=draw(_bodies()),
        exchange=draw(st.text(max_size=20)),
        routing_key=draw(st.text(max_size=40)),
        message_id=draw(st.none() | st.text(max_size=36)),
        content_type=draw(
            st.sampled_from([None, "", "application/json", "application/json; charset=utf-8", "text/plain"])
        ),
        content_encoding=draw(st.sampled_from([None, "", "utf-8", "gzip"])),
        timestamp=draw(st.none() | _moments),
        headers=headers or None,
    )


def _refusal(delivery: Delivery) -> EventValidationError | None:
    """Why the contract refuses this entry, checked directly; None when it is a valid event."""
    try:
        check_content_headers(delivery.content_type, delivery.content_encoding)
        parse_event(delivery.body, max_bytes=MAX_BYTES)
    except EventValidationError as error:
        return error
    return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(delivery=_deliveries(), seen_before=st.booleans())
def test_any_entry_has_exactly_one_outcome_and_the_right_one(delivery: Delivery, seen_before: bool) -> None:
    key = message_key(delivery.message_id, delivery.body)
    duplicates = _filter(key) if seen_before else _filter("id:something-else")
    outcome = classify(delivery, duplicates=duplicates, max_event_bytes=MAX_BYTES)

    assert sum(isinstance(outcome, kind) for kind in OUTCOMES) == 1
    assert len(duplicates) == 1  # classify remembers nothing
    marker = (delivery.headers or {}).get(MARKER_HEADER)
    if isinstance(marker, str):
        assert outcome == Marker(marker)
        return
    if seen_before:
        assert outcome == Duplicate(key)
        return
    match outcome:
        case Deliver():
            assert outcome.key == key
            event = parse_event(delivery.body, max_bytes=MAX_BYTES)
            assert outcome.event == event
            assert outcome.groups == groups_for(event)
            record = outcome.record(delivery)
            assert record.offset == delivery.offset
            assert record.check == entry_check(
                delivery.body,
                message_id=delivery.message_id,
                exchange=delivery.exchange,
                routing_key=delivery.routing_key,
            )
            assert Position.parse(str(record.position)) == record.position
            assert record.target == event.type
            assert record.groups == outcome.groups
            assert record.published_at == outcome.published_at
            # The payload is what clients get: it parses back to the same event.
            assert record.payload is not None
            assert parse_event(orjson.dumps(record.payload), max_bytes=10 * MAX_BYTES) == event
            if delivery.timestamp is not None:
                sent_at = delivery.timestamp
                expected = (sent_at if sent_at.tzinfo else sent_at.replace(tzinfo=UTC)).timestamp()
                assert outcome.published_at == expected
        case DeadLetter():
            assert outcome.key == key
            refused = _refusal(delivery)
            assert refused is not None
            assert (outcome.reason, outcome.detail) == (refused.reason.value, refused.detail)
        case _:
            pytest.fail(f"{outcome!r} for an entry that is neither a marker nor seen before")


def test_every_entry_records_its_amqp_timestamp_not_only_events() -> None:
    sent_at = datetime(2025, 5, 1, 10, 0, 0, tzinfo=UTC)
    marker = _delivery(b"", headers={MARKER_HEADER: "instance:token"}, timestamp=sent_at)
    refused = _delivery(b"not json", timestamp=sent_at)
    assert marker.record().published_at == sent_at.timestamp()
    assert refused.record().published_at == sent_at.timestamp()
    assert _delivery(b"not json").record().published_at is None  # no timestamp: the history uses "now"
