"""Event contract: pydantic models of the events consumed from RabbitMQ, their parser, and group names.

Rule: this package does no I/O and imports nothing from the service; ``python -m schemas.generate``
writes the JSON Schema and TypeScript files that producers and the frontend build against.
"""

from __future__ import annotations

from schemas.errors import EventValidationError, Reason
from schemas.events import (
    DEFAULT_MAX_EVENT_BYTES,
    EVENT_TYPES,
    Event,
    EventEnvelope,
    JobAssigned,
    RecommendationReady,
)
from schemas.groups import (
    InvalidGroupKeyError,
    canonical_contractor_id,
    canonical_uuid,
    contractor_group,
    dispatch_group,
    normalize_region,
    split_group,
)
from schemas.parsing import JSON_CONTENT_TYPE, check_content_headers, parse_event

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "EVENT_TYPES",
    "JSON_CONTENT_TYPE",
    "Event",
    "EventEnvelope",
    "EventValidationError",
    "InvalidGroupKeyError",
    "JobAssigned",
    "Reason",
    "RecommendationReady",
    "canonical_contractor_id",
    "canonical_uuid",
    "check_content_headers",
    "contractor_group",
    "dispatch_group",
    "normalize_region",
    "parse_event",
    "split_group",
]
