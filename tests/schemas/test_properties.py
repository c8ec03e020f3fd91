"""Property tests: whatever a producer sends, ``parse_event`` returns an event or ``EventValidationError``.

Only the library's declared exception type may escape (the rule of OSS-Fuzz harnesses). Three generators:
arbitrary bytes, arbitrary JSON documents, and valid events with one field mutated — the last
reaches deep into validation, where an unexpected exception would hide. Valid events round-trip, and
whatever parses is the event its document describes (``assert_event_of``).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import EventValidationError, JobAssigned, RecommendationReady, parse_event
from schemas.events import EVENT_TYPES, MAX_SAFE_INTEGER

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
uuids = st.uuids().map(str) | st.uuids().map(lambda value: str(value).upper())
regions = st.from_regex(r"[A-Za-z0-9]{1,10}(-[A-Za-z0-9]{1,10}){0,3}", fullmatch=True)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))
offsets = st.sampled_from(["Z", "+00:00", "+05:30", "-08:00"])


def _stamp(moment: datetime, offset: str) -> str:
    if offset == "Z":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    sign = 1 if offset[0] == "+" else -1
    delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])) * sign
    local = moment + delta
    return local.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + offset


@st.composite
def recommendation_ready(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "RecommendationReady",
        "jobId": draw(uuids),
        "requestId": draw(uuids),
        "region": draw(regions),
        "configVersion": draw(st.integers(0, MAX_SAFE_INTEGER)),
        "generatedAt": _stamp(draw(moments), draw(offsets)),
    }


@st.composite
def job_assigned(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(moments)
    end = start + timedelta(seconds=draw(st.integers(1, 86_400 * 30)))
    return {
        "type": "JobAssigned",
        "jobId": draw(uuids),
        "contractorId": draw(uuids),
        "assignmentId": draw(uuids),
        "startUtc": _stamp(start, draw(offsets)),
        "endUtc": _stamp(end, draw(offsets)),
        "region": draw(regions),
        "source": draw(st.sampled_from(["auto", "manual"])),
        "auditId": draw(uuids),
    }


valid_events = recommendation_ready() | job_assigned()


def _parse(body: bytes) -> RecommendationReady | JobAssigned | None:
    try:
        return parse_event(body)
    except EventValidationError:
        return None


EVENT_CLASSES: dict[str, type[RecommendationReady | JobAssigned]] = {
    "RecommendationReady": RecommendationReady,
    "JobAssigned": JobAssigned,
}


def assert_event_of(event: RecommendationReady | JobAssigned, document: Any) -> None:
    """``event`` is the event ``document`` describes: its type, its fields unchanged, nothing invented."""
    assert isinstance(document, dict)
    assert type(event) is EVENT_CLASSES[document["type"]]
    payload = event.to_client_payload()
    assert payload["type"] == event.type == document["type"]
    assert payload == {key: document[key] for key in payload}
    assert parse_event(orjson.dumps(payload)) == event  # what clients receive is itself a valid event


@SETTINGS
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_give_an_event_or_a_validation_error(body: bytes) -> None:
    event = _parse(body)
    if event is not None:
        assert_event_of(event, json.loads(body))


@SETTINGS
@given(json_values)
def test_arbitrary_json_gives_an_event_or_a_validation_error(document: Any) -> None:
    event = _parse(_dumps(document))
    if event is not None:
        assert_event_of(event, document)


@SETTINGS
@given(valid_events)
def test_valid_events_parse_and_round_trip_exactly(document: dict[str, Any]) -> None:
    event = parse_event(orjson.dumps(document))
    assert event.to_client_payload() == document
    assert_event_of(event, document)


@SETTINGS
@given(valid_events, st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=4))
def test_extra_fields_never_reach_clients(document: dict[str, Any], extra: dict[str, Any]) -> None:
    extra = {key: value for key, value in extra.items() if key not in document}
    body = _dumps({**document, **extra})
    event = _parse(body)
    if event is not None:  # extras can push the body over the size limit
        assert event.to_client_payload() == document
        assert_event_of(event, document)


@SETTINGS
@given(valid_events, st.data())
def test_one_mutated_field_gives_an_event_or_a_validation_error(
    document: dict[str, Any], data: st.DataObject
) -> None:
    field = data.draw(st.sampled_from(sorted(document)))
    mutated = dict(document)
    choice = data.draw(st.integers(0, 2))
    if choice == 0:
        del mutated[field]
    elif choice == 1:
        mutated[field] = data.draw(json_values)
    else:
        mutated[field] = data.draw(
            st.sampled_from([*EVENT_TYPES, str(uuid.uuid4()), "2025-01-01T00:00:00Z", "", -1, 2**64])
        )
    event = _parse(_dumps(mutated))
    if event is not None:
        assert_event_of(event, mutated)


def _dumps(document: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(document)
    except TypeError:  # integers beyond 64 bits: orjson refuses them, the stdlib writes them
        return json.dumps(document).encode()
