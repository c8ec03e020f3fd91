"""Shared pieces of the consumer tests: a recording ``EventLog``, a running ``EventConsumer``, log events.

The hub is our own interface (``consumers.ports.EventLog``), so a fake of it is fair; the broker
never is. Waiting is done on events with timeouts, never on sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import REGISTRY

from config.settings import Settings
from consumers import EventConsumer
from schemas.log import LogRecord


@dataclass(frozen=True)
class Sent:
    groups: tuple[str, ...]
    target: str
    argument: Any
    position: str


class RecordingLog:
    """Records every entry, delivery and reset; ``hook`` runs first on a delivery and may raise.

    ``records`` is the history as the hub would hold it (cleared by a reset); ``problems`` collects
    broken promises of the consumer (an offset that does not grow, a delivery of an entry that was
    not recorded just before) instead of raising into the consumer's worker — ``running`` asserts
    it is empty. ``on_record`` runs after each entry is recorded.
    """

    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self.sent: list[Sent] = []
        self.delivered: list[LogRecord] = []
        self.resets: list[str] = []
        self.problems: list[str] = []
        self.hook: Callable[[Sent, int], object] | None = None
        self.on_record: Callable[[LogRecord], object] | None = None
        self.calls = 0
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def record(self, record: LogRecord) -> None:
        if self.records and record.offset <= self.records[-1].offset:
            self.problems.append(f"offset {record.offset} recorded after {self.records[-1].offset}")
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)
        self._changed()

    def deliver(self, record: LogRecord) -> int:
        if record.target is None:
            self.problems.append(f"entry {record.position} without a target delivered")
        if not self.records or self.records[-1] is not record:
            self.problems.append(f"entry {record.position} delivered without being recorded just before")
        sent = Sent(record.groups, record.target or "", record.payload, str(record.position))
        self.calls += 1
        if self.hook is not None:
            self.hook(sent, self.calls)
        self.sent.append(sent)
        self.delivered.append(record)
        self._changed()
        return len(set(record.groups))

    def reset(self, reason: str) -> None:
        self.resets.append(reason)
        self.records.clear()
        self._changed()

    def _changed(self) -> None:
        for predicate, future in list(self._waiters):
            if not future.done() and predicate():
                future.set_result(None)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        """Return once ``predicate()`` holds (checked after every record, delivery and reset)."""
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AssertionError(
                f"{what or 'condition'} not met within {timeout} s; {len(self.sent)} sent, "
                f"{len(self.records)} recorded, resets {self.resets}"
            ) from None
        finally:
            self._waiters.remove(entry)

    async def wait_until(self, predicate: Callable[[list[Sent]], bool], timeout: float = 10.0) -> list[Sent]:
        await self.wait_for(lambda: predicate(self.sent), timeout)
        return self.sent

    async def wait_for_count(self, count: int, timeout: float = 10.0) -> list[Sent]:
        return await self.wait_until(lambda sent: len(sent) >= count, timeout)

    async def wait_for_reset(self, count: int = 1, timeout: float = 15.0) -> list[str]:
        await self.wait_for(lambda: len(self.resets) >= count, timeout, what=f"{count} reset(s)")
        return self.resets

    def job_ids(self) -> list[str]:
        return [sent.argument["jobId"] for sent in self.sent]

    def recorded_job_ids(self) -> list[str]:
        return [record.payload["jobId"] for record in self.records if record.payload is not None]


@pytest.fixture
def sender() -> RecordingLog:
    return RecordingLog()


@asynccontextmanager
async def running(
    settings: Settings, sender: RecordingLog, *, wait: bool = True, **options: Any
) -> AsyncIterator[EventConsumer]:
    """An ``EventConsumer`` that is started (and caught up, with ``wait``) and always stopped."""
    options.setdefault("reconnect_interval_seconds", 0.5)
    options.setdefault("watchdog_interval_seconds", 1.0)
    options.setdefault("heartbeat_seconds", 5)
    consumer = EventConsumer(settings, sender, **options)
    await consumer.start()
    try:
        if wait:
            await asyncio.wait_for(consumer.wait_caught_up(), timeout=15)
        yield consumer
    finally:
        await consumer.stop()
    assert sender.problems == []


def metric(name: str, **labels: str) -> float:
    """Current value of a sample in the default registry (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def eventually(
    predicate: Callable[[], bool], *, timeout: float = 15.0, what: str = "condition"
) -> None:
    """Poll a state that has no event to await (e.g. "the broker noticed"), every 20 ms."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():  # noqa: ASYNC110 - the state has no event; this is the fallback
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"{what}: not reached within {timeout} s") from None


class LogEvents(logging.Handler):
    """The service's structlog events (``consumers.*``, ``broker.*``) as dicts, as they are emitted.

    ``on[name]`` callbacks run synchronously when that event is logged, so a test can take a
    snapshot of the state at that very moment (e.g. what was recorded when the consumer attached).
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[dict[str, Any]] = []
        self.on: dict[str, Callable[[dict[str, Any]], object]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        fields = record.msg
        if not isinstance(fields, dict) or not record.name.startswith(("consumers", "broker")):
            return
        self.events.append(fields)
        callback = self.on.get(str(fields.get("event")))
        if callback is not None:
            callback(fields)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for fields in self.events if fields.get("event") == event]


@contextmanager
def log_events() -> Iterator[LogEvents]:
    handler = LogEvents()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@pytest.fixture
def logged() -> Iterator[LogEvents]:
    with log_events() as handler:
        yield handler
