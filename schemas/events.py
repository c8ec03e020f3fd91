"""The event contract: what upstream services publish to RabbitMQ and what browsers receive.

Rule: one flat pydantic model per event, discriminated on ``type``, field names camelCase exactly
as published. Validation is strict (no coercion: ``"5"`` is not an integer) and values are kept as
published — UUIDs and timestamps stay the producer's strings — so ``to_client_payload()`` hands
clients the validated fields verbatim. Fields the model does not know are ignored and never
forwarded (forward compatibility: producers may add fields before this service knows them).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, model_validator

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "EVENT_MODELS",
    "EVENT_TYPES",
    "MAX_SAFE_INTEGER",
    "Event",
    "EventEnvelope",
    "JobAssigned",
    "RecommendationReady",
    "parse_timestamp",
]

DEFAULT_MAX_EVENT_BYTES: Final = 2048
"""Bodies over 2 KiB are refused (README, "Broker contract"); the service's limit is ``MAX_EVENT_BYTES``."""

MAX_SAFE_INTEGER: Final = 2**53 - 1
"""Largest integer a JavaScript client reads exactly (``Number.MAX_SAFE_INTEGER``)."""

# Patterns are written for JSON Schema (ECMA-262) and used with ``re.fullmatch`` here, so ``$``
# cannot match before a trailing newline. ``[0-9]`` rather than ``\d``: Python's ``\d`` matches
# every Unicode digit.
UUID_PATTERN: Final = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
TIMESTAMP_PATTERN: Final = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
REGION_PATTERN: Final = "^[A-Za-z0-9]+(-[A-Za-z0-9]+)*$"
REGION_MAX_LENGTH: Final = 64

_UUID_RE: Final = re.compile(UUID_PATTERN)
_TIMESTAMP_RE: Final = re.compile(TIMESTAMP_PATTERN)
_REGION_RE: Final = re.compile(REGION_PATTERN)


def _check_uuid(value: str) -> str:
    if not _UUID_RE.fullmatch(value):
        raise ValueError("must be a UUID like 3f2504e0-4f89-11d3-9a0c-0305e82c3301")
    return value


def parse_timestamp(value: str) -> datetime:
    """Parse a contract timestamp: RFC 3339 ``date-time`` (ISO 8601 with seconds and an offset)."""
    if not _TIMESTAMP_RE.fullmatch(value):
        raise ValueError("must be an ISO 8601 timestamp with an offset, like 2025-01-31T09:30:00Z")
    try:
        # Python 3.11+ reads "Z" and fractions of any length (truncated to microseconds).
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("is not a valid date and time (check day, hour, minute, second, offset)") from None


def _check_timestamp(value: str) -> str:
    parse_timestamp(value)
    return value


def _check_region(value: str) -> str:
    if not _REGION_RE.fullmatch(value):
        raise ValueError("must be a slug of letters, digits and single hyphens, like north-america")
    return value


UuidString = Annotated[
    str,
    Field(json_schema_extra={"format": "uuid", "pattern": UUID_PATTERN}),
    AfterValidator(_check_uuid),
]
"""A UUID in its hyphenated form, any case, kept exactly as published."""

Timestamp = Annotated[
    str,
    Field(json_schema_extra={"format": "date-time", "pattern": TIMESTAMP_PATTERN}),
    AfterValidator(_check_timestamp),
]
"""An ISO 8601 / RFC 3339 date-time with seconds and a ``Z`` or ``±hh:mm`` offset, kept as published."""

Region = Annotated[
    str,
    # Length first (cheap, and the regex never sees a long string), then the slug pattern.
    Field(min_length=1, max_length=REGION_MAX_LENGTH, json_schema_extra={"pattern": REGION_PATTERN}),
    AfterValidator(_check_region),
]
"""A region slug such as ``north-america``; groups use it lower-cased."""


class _EventModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, use_attribute_docstrings=True)

    schema_id: ClassVar[str]
    """File name stem of the generated JSON Schema (``schemas/<schema_id>.schema.json``)."""

    def to_client_payload(self) -> dict[str, Any]:
        """The single argument of the hub method named ``type``: the validated fields, as published."""
        return self.model_dump(by_alias=True, mode="json")


class RecommendationReady(_EventModel):
    """Scheduling recommendations for a job are ready. Routed to `dispatch/{region}`."""

    schema_id: ClassVar[str] = "recommendation-ready"

    type: Literal["RecommendationReady"]
    """Event type; also the name of the hub method clients receive it on."""
    job_id: UuidString = Field(alias="jobId")
    """The job the recommendations are for."""
    request_id: UuidString = Field(alias="requestId")
    """The recommendation request that produced them."""
    region: Region
    """Region of the job; the event goes to the dispatchers of this region."""
    config_version: int = Field(alias="configVersion", ge=0, le=MAX_SAFE_INTEGER)
    """Version of the scoring configuration used; a non-negative integer."""
    generated_at: Timestamp = Field(alias="generatedAt")
    """When the recommendations were generated."""


class JobAssigned(_EventModel):
    """A job was assigned to a contractor. Routed to `dispatch/{region}` and `contractor/{contractorId}`."""

    schema_id: ClassVar[str] = "job-assigned"

    type: Literal["JobAssigned"]
    """Event type; also the name of the hub method clients receive it on."""
    job_id: UuidString = Field(alias="jobId")
    """The job that was assigned."""
    contractor_id: UuidString = Field(alias="contractorId")
    """The contractor it was assigned to; the event goes to this contractor."""
    assignment_id: UuidString = Field(alias="assignmentId")
    """The assignment record."""
    start_utc: Timestamp = Field(alias="startUtc")
    """Start of the assigned slot."""
    end_utc: Timestamp = Field(alias="endUtc")
    """End of the assigned slot; strictly after `startUtc`."""
    region: Region
    """Region of the job; the event goes to the dispatchers of this region."""
    source: Literal["auto", "manual"]
    """`auto` when the scheduler assigned the job, `manual` when a dispatcher did."""
    audit_id: UuidString = Field(alias="auditId")
    """The audit log entry of the assignment."""

    @model_validator(mode="after")
    def _end_after_start(self) -> JobAssigned:
        # The contract: `endUtc` after `startUtc` — strictly after; offsets may differ.
        if parse_timestamp(self.end_utc) <= parse_timestamp(self.start_utc):
            raise ValueError("endUtc must be after startUtc")
        return self


Event = Annotated[RecommendationReady | JobAssigned, Field(discriminator="type")]
"""Any event this service forwards, told apart by ``type``."""

EVENT_MODELS: Final[tuple[type[RecommendationReady], type[JobAssigned]]] = (RecommendationReady, JobAssigned)
EVENT_TYPES: Final[tuple[str, ...]] = ("RecommendationReady", "JobAssigned")
"""Event types, which are also the hub method names clients subscribe to."""


class EventEnvelope(RootModel[Event]):
    """A message body of any known event type; ``.root`` is the event."""

    model_config = ConfigDict(strict=True)
