"""A stand-in for the broker consumer, for tests of the app around it (readiness, shutdown)."""

from __future__ import annotations

from config.settings import Settings
from consumers.ports import EventLog
from service.app import ConsumerFactory
from service.write_batch import WriteBatch

__all__ = ["FakeConsumer"]


class FakeConsumer:
    """Ready in every way until a test says otherwise; remembers the bound each ``stop`` was given."""

    def __init__(self) -> None:
        self.is_connected = True
        self.is_consuming = True
        self.is_caught_up = True
        self.stopped_within: list[float | None] = []

    def factory(self) -> ConsumerFactory:
        """What ``create_app(..., consumer_factory=...)`` takes: this consumer, whatever it is given."""

        def make(_settings: Settings, _log: EventLog, _batch: WriteBatch) -> FakeConsumer:
            return self

        return make

    async def wait_caught_up(self) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self, timeout: float | None = None) -> None:
        self.stopped_within.append(timeout)
