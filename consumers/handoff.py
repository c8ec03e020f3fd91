"""Handing one valid event to the hub, with its metrics and its log line.

The hub is another component: if ``EventLog.deliver`` raises, the same event is tried again in
place (order is kept: nothing behind it moves meanwhile) a few times with a short backoff, then
dead-lettered with reason ``send_failed`` so that it can be replayed by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from consumers import metrics
from consumers.amqp import DeliveredMessage, message_fields
from consumers.handling import Deliver
from consumers.metrics import SEND_FAILED
from consumers.ports import EventLog
from consumers.settle import Settler
from schemas.log import LogRecord

__all__ = ["HandOff"]

log = structlog.get_logger(__name__)


class HandOff:
    def __init__(
        self,
        event_log: EventLog,
        settler: Settler,
        *,
        attempts: int,
        retry_delay_seconds: float,
        before_waiting: Callable[[], None],
    ) -> None:
        if attempts < 1:
            raise ValueError("send_attempts must be at least 1")
        self._log = event_log
        self._settler = settler
        self._attempts = attempts
        self._retry_delay = retry_delay_seconds
        self._before_waiting = before_waiting  # nothing held may wait with us (see the write batch)
        self._by_type: dict[str, _TypeMetrics] = {}

    async def deliver(
        self, outcome: Deliver, record: LogRecord, message: DeliveredMessage, *, info: bool
    ) -> None:
        event = outcome.event
        by_type = self._by_type.get(event.type)
        if by_type is None:
            by_type = self._by_type[event.type] = _TypeMetrics(event.type)
        by_type.consumed.inc()
        for attempt in range(1, self._attempts + 1):
            try:
                delivered = self._log.deliver(record)
                break
            except Exception as error:  # the hub is another component; its failure must not stop us
                metrics.SEND_FAILURES.inc()
                log.warning(
                    "event.send_failed",
                    **message_fields(message),
                    attempt=attempt,
                    of=self._attempts,
                    error=f"{type(error).__name__}: {error}",
                    exc_info=attempt == self._attempts,
                )
                if attempt < self._attempts:
                    self._before_waiting()
                    await asyncio.sleep(self._retry_delay * 2 ** (attempt - 1))
        else:
            detail = f"handing the event to the hub failed {self._attempts} times; see the instance's logs"
            bound = log.bind(**message_fields(message))
            await self._settler.dead_letter(message, reason=SEND_FAILED, detail=detail, bound=bound)
            return
        by_type.delivered.inc(delivered)
        if record.published_at is not None:
            by_type.latency.observe(max(0.0, time.time() - record.published_at))
        if info:
            log.info(
                "event.delivered",
                **message_fields(message),
                **_event_fields(outcome),
                position=str(record.position),
                connections=delivered,
            )


class _TypeMetrics:
    """The labelled metric children of one event type, looked up once instead of per message."""

    __slots__ = ("consumed", "delivered", "latency")

    def __init__(self, event_type: str) -> None:
        self.consumed = metrics.EVENTS_CONSUMED.labels(type=event_type)
        self.delivered = metrics.EVENTS_DELIVERED.labels(type=event_type)
        self.latency = metrics.EVENT_LATENCY.labels(type=event_type)


_OPTIONAL_FIELDS = (
    ("request_id", "requestId"),
    ("contractor_id", "contractorId"),
    ("assignment_id", "assignmentId"),
)


def _event_fields(outcome: Deliver) -> dict[str, Any]:
    event = outcome.event
    fields: dict[str, Any] = {"type": event.type, "jobId": event.job_id, "region": event.region}
    # Only the fields the event's model declares: ``getattr(event, name, None)`` on another one goes
    # through pydantic's ``__getattr__``, which raises (~16 µs an event, issue 12).
    declared = type(event).model_fields
    for name, key in _OPTIONAL_FIELDS:
        if name in declared:
            value = getattr(event, name)
            if value is not None:
                fields[key] = value
    return fields
