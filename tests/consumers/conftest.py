"""Shared pieces of the consumer tests: a recording ``EventLog`` and a running ``EventConsumer``.

The hub is our own interface (``consumers.ports.EventLog``), so a fake of it is fair; the broker
never is. Waiting is done on events with timeouts, never on sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
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
    """Records every entry and every delivery; ``hook`` runs first on a delivery and may raise."""

    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self.sent: list[Sent] = []
        self.resets: list[str] = []
        self.hook: Callable[[Sent, int], object] | None = None
        self.calls = 0
        self._waiters: list[tuple[Callable[[list[Sent]], bool], asyncio.Future[None]]] = []

    def record(self, record: LogRecord) -> None:
        if self.records:
            assert record.offset > self.records[-1].offset, "offsets only ever grow"
        self.records.append(record)

    def deliver(self, record: LogRecord) -> int:
        assert record.target is not None
        sent = Sent(record.groups, record.target, record.payload, str(record.position))
        self.calls += 1
        if self.hook is not None:
            self.hook(sent, self.calls)
        self.sent.append(sent)
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(self.sent):
                future.set_result(None)
        return len(set(record.groups))

    def reset(self, reason: str) -> None:
        self.resets.append(reason)
        self.records.clear()

    async def wait_until(self, predicate: Callable[[list[Sent]], bool], timeout: float = 10.0) -> list[Sent]:
        if predicate(self.sent):
            return self.sent
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AssertionError(f"condition not met within {timeout} s; {len(self.sent)} sent") from None
        finally:
            self._waiters.remove(entry)
        return self.sent

    async def wait_for_count(self, count: int, timeout: float = 10.0) -> list[Sent]:
        return await self.wait_until(lambda sent: len(sent) >= count, timeout)

    def job_ids(self) -> list[str]:
        return [sent.argument["jobId"] for sent in self.sent]


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
