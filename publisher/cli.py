"""``python -m publisher``: publish events by hand, validated, persistent and confirmed.

    python -m publisher recommendation-ready --region north-america [--job-id ID] ...
    python -m publisher job-assigned --region north-america --contractor-id ID [--source manual] ...
    python -m publisher --json body.json [--no-validate --exchange assignments]

Common options (before or after the event name): ``--url`` (default: ``RABBITMQ_URL`` via the
settings), ``--count N``. Fields not given are generated (fresh UUIDs, "now"). Each published
message is printed as one JSON line. Exit status: 0 published; 1 invalid or not published.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from broker.errors import PublishError
from config.settings import ConfigurationError, Settings, load_settings
from publisher.events import EventPublisher, job_assigned, recommendation_ready

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: an option given before the event name must not be reset by the subparser's default.
    common.add_argument("--url", default=argparse.SUPPRESS, help="AMQP URL (default: RABBITMQ_URL)")
    common.add_argument(
        "--count", type=int, default=argparse.SUPPRESS, help="how many to publish (default 1)"
    )
    parser = argparse.ArgumentParser(
        prog="python -m publisher",
        description="Publish SmartScheduler events to RabbitMQ (validated, persistent, confirmed).",
        parents=[common],
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="publish this body as is ('-' for stdin)")
    parser.add_argument("--no-validate", action="store_true", help="with --json: publish even if invalid")
    parser.add_argument("--exchange", help="override the exchange (required with --no-validate bodies)")
    parser.add_argument("--routing-key", help="override the routing key")
    events = parser.add_subparsers(dest="event", metavar="EVENT")

    ready = events.add_parser("recommendation-ready", parents=[common], help="publish RecommendationReady")
    ready.add_argument("--region", required=True)
    ready.add_argument("--job-id")
    ready.add_argument("--request-id")
    ready.add_argument("--config-version", type=int)
    ready.add_argument("--generated-at")

    assigned = events.add_parser("job-assigned", parents=[common], help="publish JobAssigned")
    assigned.add_argument("--region", required=True)
    assigned.add_argument("--contractor-id", required=True)
    assigned.add_argument("--job-id")
    assigned.add_argument("--assignment-id")
    assigned.add_argument("--start-utc")
    assigned.add_argument("--end-utc")
    assigned.add_argument("--source", choices=["auto", "manual"])
    assigned.add_argument("--audit-id")
    return parser


def _bodies(args: argparse.Namespace, count: int) -> list[bytes]:
    if args.json is not None:
        raw = sys.stdin.buffer.read() if str(args.json) == "-" else args.json.read_bytes()
        return [raw] * count
    if args.event == "recommendation-ready":
        return [
            orjson.dumps(
                recommendation_ready(
                    region=args.region,
                    jobId=args.job_id,
                    requestId=args.request_id,
                    configVersion=args.config_version,
                    generatedAt=args.generated_at,
                )
            )
            for _ in range(count)
        ]
    return [
        orjson.dumps(
            job_assigned(
                region=args.region,
                contractor_id=args.contractor_id,
                jobId=args.job_id,
                assignmentId=args.assignment_id,
                startUtc=args.start_utc,
                endUtc=args.end_utc,
                source=args.source,
                auditId=args.audit_id,
            )
        )
        for _ in range(count)
    ]


async def _publish_all(args: argparse.Namespace, settings: Settings | None) -> int:
    url = getattr(args, "url", None) or (
        settings.amqp_url if settings else "amqp://guest:guest@localhost:5672/"
    )
    count = getattr(args, "count", 1)
    if count < 1:
        print("--count must be at least 1", file=sys.stderr)
        return 1
    bodies = _bodies(args, count)
    publisher = (
        EventPublisher(
            url,
            recommendations_exchange=settings.recommendations_exchange,
            assignments_exchange=settings.assignments_exchange,
            max_event_bytes=settings.max_event_bytes,
        )
        if settings
        else EventPublisher(url)
    )
    try:
        async with publisher:
            for body in bodies:
                published = await publisher.publish_body(
                    body,
                    exchange=args.exchange,
                    routing_key=args.routing_key,
                    validate=not args.no_validate,
                )
                print(orjson.dumps(published.as_json()).decode(), flush=True)
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.json is None and args.event is None:
        parser.error("give an event name (recommendation-ready, job-assigned) or --json FILE")
    if args.json is not None and args.event is not None:
        parser.error("--json and an event name are mutually exclusive")
    if args.no_validate and args.json is None:
        parser.error("--no-validate only applies to --json bodies")
    try:
        # Exchange names and the URL come from the one settings model; the auth settings are
        # irrelevant to publishing, so dev mode only lets the model validate without them.
        settings: Settings | None = load_settings(auth_dev_mode=True)
    except ConfigurationError as error:
        print(f"warning: ignoring the environment's settings ({error}); using defaults", file=sys.stderr)
        settings = None
    return asyncio.run(_publish_all(args, settings))
