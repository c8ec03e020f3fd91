"""The event contract: what is accepted, what is refused and why, and what clients receive."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas import (
    EventValidationError,
    JobAssigned,
    Reason,
    RecommendationReady,
    check_content_headers,
    parse_event,
)

READY: dict[str, Any] = {
    "type": "RecommendationReady",
    "jobId": "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
    "requestId": "7C9E6679-7425-40DE-944B-E07FC1F90AE7",
    "region": "north-america",
    "configVersion": 12,
    "generatedAt": "2025-03-01T08:15:00.1234567Z",
}
ASSIGNED: dict[str, Any] = {
    "type": "JobAssigned",
    "jobId": "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
    "contractorId": "16FD2706-8BAF-433B-82EB-8C7FADA847DA",
    "assignmentId": "886313e1-3b8a-5372-9b90-0c9aee199e5d",
    "startUtc": "2025-03-02T09:00:00+01:00",
    "endUtc": "2025-03-02T08:30:00Z",
    "region": "EMEA",
    "source": "auto",
    "auditId": "a8098c1a-f86e-11da-bd1a-00112444be1e",
}


def _body(base: dict[str, Any], **changes: Any) -> bytes:
    document = {**base, **changes}
    return orjson.dumps({key: value for key, value in document.items() if value is not _DROP})


_DROP = object()


def _reason(body: bytes, **kwargs: Any) -> tuple[Reason, str]:
    with pytest.raises(EventValidationError) as caught:
        parse_event(body, **kwargs)
    return caught.value.reason, caught.value.detail


def test_recommendation_ready_is_parsed_and_forwarded_verbatim() -> None:
    event = parse_event(_body(READY))
    assert isinstance(event, RecommendationReady)
    assert event.to_client_payload() == READY
    assert event.job_id == READY["jobId"]


def test_job_assigned_is_parsed_and_forwarded_verbatim() -> None:
    event = parse_event(_body(ASSIGNED))
    assert isinstance(event, JobAssigned)
    # 09:00+01:00 is 08:00Z, so 08:30Z is after it although it reads earlier.
    assert event.to_client_payload() == ASSIGNED


def test_unknown_fields_are_ignored_and_not_forwarded() -> None:
    event = parse_event(_body(READY, futureField=[1, {"a": None}], jobid="shadow", Type="X"))
    assert event.to_client_payload() == READY


def test_payload_field_order_is_the_contracts() -> None:
    shuffled = dict(reversed(list(READY.items())))
    assert list(parse_event(orjson.dumps(shuffled)).to_client_payload()) == list(READY)


@pytest.mark.parametrize(
    ("body", "reason", "detail"),
    [
        (b"", Reason.EMPTY, "empty"),
        (b"\xc3\x28", Reason.NOT_UTF8, "byte 0"),
        (b"{'type': 1}", Reason.NOT_JSON, "not JSON"),
        (b'{"type": "RecommendationReady"', Reason.NOT_JSON, "not JSON"),
        (b'{"a": NaN}', Reason.NOT_JSON, "not JSON"),
        (b"\xef\xbb\xbf{}", Reason.NOT_JSON, "not JSON"),
        (b"null", Reason.NOT_OBJECT, "NoneType"),
        (b'"RecommendationReady"', Reason.NOT_OBJECT, "str"),
        (b"{}", Reason.SCHEMA, "type: field required"),
        (b'{"type": null}', Reason.UNKNOWN_TYPE, "None"),
        (b'{"type": ["RecommendationReady"]}', Reason.UNKNOWN_TYPE, "not one of"),
        (b'{"type": "recommendationready"}', Reason.UNKNOWN_TYPE, "'recommendationready'"),
        (_body(READY, type="JobCancelled"), Reason.UNKNOWN_TYPE, "JobCancelled"),
        (_body(READY, jobId=_DROP), Reason.SCHEMA, "jobId: Field required"),
        (_body(READY, jobId=42), Reason.SCHEMA, "jobId: Input should be a valid string"),
        (_body(READY, jobId="3f2504e04f8911d39a0c0305e82c3301"), Reason.SCHEMA, "jobId: must be a UUID"),
        (
            _body(READY, jobId="{3f2504e0-4f89-11d3-9a0c-0305e82c3301}"),
            Reason.SCHEMA,
            "jobId: must be a UUID",
        ),
        (
            _body(READY, jobId="3f2504e0-4f89-11d3-9a0c-0305e82c3301\n"),
            Reason.SCHEMA,
            "jobId: must be a UUID",
        ),
        (_body(READY, requestId="g" * 36), Reason.SCHEMA, "requestId"),
        (
            _body(READY, configVersion=-1),
            Reason.SCHEMA,
            "configVersion: Input should be greater than or equal to 0",
        ),
        (_body(READY, configVersion="12"), Reason.SCHEMA, "configVersion: Input should be a valid integer"),
        (_body(READY, configVersion=12.0), Reason.SCHEMA, "configVersion"),
        (_body(READY, configVersion=True), Reason.SCHEMA, "configVersion"),
        (_body(READY, configVersion=2**53), Reason.SCHEMA, "configVersion: Input should be less than"),
        (_body(READY, region=""), Reason.SCHEMA, "region"),
        (_body(READY, region="north america"), Reason.SCHEMA, "region: must be a slug"),
        (_body(READY, region="north--america"), Reason.SCHEMA, "region: must be a slug"),
        (_body(READY, region="-north"), Reason.SCHEMA, "region: must be a slug"),
        (_body(READY, region="nörth"), Reason.SCHEMA, "region: must be a slug"),
        (_body(READY, region="a" * 65), Reason.SCHEMA, "region: String should have at most 64 characters"),
        (_body(READY, generatedAt="2025-03-01T08:15:00"), Reason.SCHEMA, "generatedAt: must be an ISO 8601"),
        (_body(READY, generatedAt="2025-03-01"), Reason.SCHEMA, "generatedAt"),
        (_body(READY, generatedAt="2025-03-01 08:15:00Z"), Reason.SCHEMA, "generatedAt"),
        (_body(READY, generatedAt="2025-02-30T08:15:00Z"), Reason.SCHEMA, "generatedAt: is not a valid date"),
        (_body(READY, generatedAt="2025-03-01T24:00:00Z"), Reason.SCHEMA, "generatedAt: is not a valid date"),
        (_body(READY, generatedAt="٢٠٢٥-03-01T08:15:00Z"), Reason.SCHEMA, "generatedAt"),
        (_body(READY, generatedAt=1740816900), Reason.SCHEMA, "generatedAt: Input should be a valid string"),
        (_body(ASSIGNED, endUtc="2025-03-02T08:00:00Z"), Reason.SCHEMA, "endUtc must be after startUtc"),
        (_body(ASSIGNED, endUtc="2025-03-02T07:00:00Z"), Reason.SCHEMA, "endUtc must be after startUtc"),
        (_body(ASSIGNED, source="Auto"), Reason.SCHEMA, "source"),
        (_body(ASSIGNED, contractorId=None), Reason.SCHEMA, "contractorId"),
        (
            _body(ASSIGNED, auditId=_DROP, assignmentId=_DROP),
            Reason.SCHEMA,
            "assignmentId: Field required; auditId",
        ),
    ],
)
def test_invalid_bodies_are_refused_with_a_reason(body: bytes, reason: Reason, detail: str) -> None:
    got_reason, got_detail = _reason(body)
    assert got_reason is reason
    assert detail in got_detail


def test_size_limit_is_checked_before_parsing() -> None:
    body = b"\xff" * 4096  # not UTF-8 either, but the size decides first
    reason, detail = _reason(body)
    assert reason is Reason.TOO_LARGE
    assert "4096 bytes; the limit is 2048" in detail
    assert parse_event(_body(READY), max_bytes=len(_body(READY)))
    assert _reason(_body(READY), max_bytes=len(_body(READY)) - 1)[0] is Reason.TOO_LARGE


def test_details_never_echo_the_body() -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    for body in (
        _body(READY, jobId=secret),
        _body(READY, region=secret + " x"),
        _body(ASSIGNED, source=secret),
        _body(READY, configVersion=secret),
    ):
        _, detail = _reason(body)
        assert secret not in detail


@pytest.mark.parametrize(
    ("content_type", "encoding", "reason"),
    [
        ("text/plain", None, Reason.CONTENT_TYPE),
        ("application/xml", None, Reason.CONTENT_TYPE),
        ("application/json; charset=iso-8859-1", None, Reason.CONTENT_TYPE),
        ("application/json", "gzip", Reason.CONTENT_ENCODING),
    ],
)
def test_wrong_content_headers_are_refused(content_type: str, encoding: str | None, reason: Reason) -> None:
    with pytest.raises(EventValidationError) as caught:
        check_content_headers(content_type, encoding)
    assert caught.value.reason is reason


@pytest.mark.parametrize(
    "content_type", [None, "", "application/json", "Application/JSON", "application/json; charset=utf-8"]
)
def test_json_or_missing_content_type_is_accepted(content_type: str | None) -> None:
    check_content_headers(content_type, None)


def test_error_is_a_value_error_that_pickles() -> None:
    import pickle

    error = EventValidationError(Reason.SCHEMA, "jobId: bad")
    assert isinstance(error, ValueError)
    assert str(error) == "schema: jobId: bad"
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert (again.reason, again.detail) == (Reason.SCHEMA, "jobId: bad")


def test_unknown_fields_beyond_64_bit_integers_do_not_invalidate_the_body() -> None:
    body = _body(READY)[:-1] + b', "futureCounter": 123456789012345678901234567890}'
    assert parse_event(body).to_client_payload() == READY


@pytest.mark.parametrize("depth", [1100, 5000])
def test_deep_nesting_is_refused_not_a_crash(depth: int) -> None:
    reason, _ = _reason(b"[" * depth + b"]" * depth, max_bytes=20_000)
    assert reason in (Reason.NOT_JSON, Reason.NOT_OBJECT)
