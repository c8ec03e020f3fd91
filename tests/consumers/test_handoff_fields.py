"""The fields of the ``event.delivered`` log line: the event's ids, the optional ones only where the
event's type has them (a RecommendationReady has no contractor, a JobAssigned no request)."""

from __future__ import annotations

import uuid

import orjson

from consumers.handling import Deliver
from consumers.handoff import _event_fields
from publisher import job_assigned, recommendation_ready
from schemas import parse_event


def _deliver(body: dict[str, object]) -> Deliver:
    return Deliver(event=parse_event(orjson.dumps(body)), groups=(), key="k", published_at=None)


def test_a_recommendation_names_its_job_region_and_request() -> None:
    body = recommendation_ready(region="emea")
    assert _event_fields(_deliver(body)) == {
        "type": "RecommendationReady",
        "jobId": body["jobId"],
        "region": "emea",
        "requestId": body["requestId"],
    }


def test_an_assignment_names_its_job_region_contractor_and_assignment() -> None:
    body = job_assigned(region="emea", contractor_id=str(uuid.uuid4()))
    assert _event_fields(_deliver(body)) == {
        "type": "JobAssigned",
        "jobId": body["jobId"],
        "region": "emea",
        "contractorId": body["contractorId"],
        "assignmentId": body["assignmentId"],
    }
